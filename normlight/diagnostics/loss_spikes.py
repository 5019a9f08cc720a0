"""Loss spikes (robust z-score over a sliding window) and the divergence guard (catalog D14)."""

from __future__ import annotations

import math
from collections import deque

# 1.4826 * MAD estimates the standard deviation of a normal distribution
MAD_TO_STD = 1.4826


def robust_zscore(history, value: float) -> float:
    """(value - median) / (1.4826 * MAD) of ``history``; 0 if the window is flat at the median."""
    xs = sorted(history)
    n = len(xs)
    if n == 0:
        return 0.0
    med = _median(xs)
    mad = _median(sorted(abs(x - med) for x in xs))
    scale = MAD_TO_STD * mad
    if scale == 0:
        return 0.0 if value == med else math.copysign(math.inf, value - med)
    return (value - med) / scale


def _median(sorted_xs) -> float:
    n = len(sorted_xs)
    mid = n // 2
    return sorted_xs[mid] if n % 2 else 0.5 * (sorted_xs[mid - 1] + sorted_xs[mid])


class SpikeDetector:
    """Flags a loss as a spike when its robust z-score against the previous ``window`` losses
    exceeds ``threshold`` (upward only). Spikes are kept out of the window so one outlier does
    not mask the next. Needs ``min_history`` losses before it judges anything."""

    def __init__(self, window: int = 100, threshold: float = 6.0, min_history: int = 20):
        if window < 3:
            raise ValueError(f"spike window must be >= 3 steps, got {window}")
        self.threshold = threshold
        self.min_history = min(min_history, window)
        self.history: deque[float] = deque(maxlen=window)
        self.count = 0
        self.last_z = 0.0

    def update(self, loss: float) -> bool:
        """Feed one finite loss; returns True if it is a spike."""
        z = robust_zscore(self.history, loss) if len(self.history) >= self.min_history else 0.0
        self.last_z = z
        spike = z > self.threshold
        if spike:
            self.count += 1
        else:
            self.history.append(loss)
        return spike


class DivergenceGuard:
    """Remembers the first step at which a loss or gradient norm was NaN/Inf."""

    def __init__(self):
        self.diverged = False
        self.step: int | None = None
        self.reason = ""

    def check(self, value: float, step: int, what: str) -> bool:
        """Returns True the first time ``value`` is not finite (and records ``step`` and ``what``)."""
        if self.diverged or math.isfinite(value):
            return False
        self.diverged, self.step, self.reason = True, int(step), f"non-finite {what} ({value})"
        return True
