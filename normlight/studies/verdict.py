"""Pure helpers for verdict rules: numbers in, numbers (or an outcome) out. No I/O, no MLflow, no torch."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence

from normlight.studies.base import Outcome


def _finite(values: Iterable) -> list[float]:
    return [float(v) for v in values]


def mean_std(values: Iterable) -> tuple[float, float]:
    """Mean and sample standard deviation (n-1); std is 0.0 for one value; both nan for no value."""
    xs = _finite(values)
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def welch(a: Iterable, b: Iterable) -> tuple[float, float]:
    """Welch's t-test of ``a`` vs ``b``: ``(t, two-sided p)``; ``(nan, nan)`` when either has fewer than 2 values.

    Same statistic as ``scipy.stats.ttest_ind(a, b, equal_var=False)``; nan as well when both variances are zero.
    """
    xa, xb = _finite(a), _finite(b)
    if len(xa) < 2 or len(xb) < 2:
        return math.nan, math.nan
    from scipy import stats

    with warnings.catch_warnings():  # identical samples: scipy warns and returns nan, which is our answer too
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(xa, xb, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def ranges_separate(a: Sequence, b: Sequence) -> bool:
    """True if the value ranges of ``a`` and ``b`` do not overlap (``max(a) < min(b)`` or ``max(b) < min(a)``)."""
    xa, xb = _finite(a), _finite(b)
    if not xa or not xb:
        return False
    return max(xa) < min(xb) or max(xb) < min(xa)


def lower_is_better(a: Sequence, b: Sequence, *, alpha: float = 0.05) -> Outcome:
    """Does ``a`` come out lower than ``b`` (e.g. the claimed-better method's loss)?

    ``"reproduced"`` if mean(a) < mean(b) and (the ranges separate or Welch p < alpha); ``"not reproduced"`` if
    mean(a) >= mean(b) and (the ranges separate or p < alpha); otherwise (overlap and no significance, or no data)
    ``"inconclusive"``.
    """
    ma, _ = mean_std(a)
    mb, _ = mean_std(b)
    if math.isnan(ma) or math.isnan(mb):
        return "inconclusive"
    _, p = welch(a, b)
    decisive = ranges_separate(a, b) or (not math.isnan(p) and p < alpha)
    if not decisive:
        return "inconclusive"
    return "reproduced" if ma < mb else "not reproduced"


def max_stable(values_by_lr: Mapping[float, Sequence[bool]]) -> float | None:
    """The largest learning rate whose runs (at least one) are all stable; None if there is none."""
    ok = [float(lr) for lr, stable in values_by_lr.items() if len(stable) and all(bool(s) for s in stable)]
    return max(ok) if ok else None
