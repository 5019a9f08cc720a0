"""Residual stream per layer: RMS, growth slope over depth and massive activations (catalog D3/D4).

Captured with forward hooks on ``model.blocks`` during a diagnostic training step only.
"""

from __future__ import annotations

import math
import time

import torch


def first_tensor(out):
    """A block may return a tensor or a tuple whose first element is the stream."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


@torch.no_grad()
def stream_stats(h: torch.Tensor, max_elems: int = 1 << 18) -> dict[str, float]:
    """RMS, max|h| and max|h| / median|h| of one block output (the median on a strided subsample)."""
    a = h.detach().float().abs().flatten()
    rms = a.square().mean().sqrt()
    amax = a.max()
    sub = a[:: max(1, a.numel() // max_elems)]
    med = sub.median()
    ratio = amax / med if med > 0 else torch.tensor(math.inf)
    return {"rms": float(rms), "max_abs": float(amax), "max_over_median": float(ratio)}


def growth_slope(rms: list[float]) -> float:
    """Least-squares slope of log(RMS^2) = log Var against layer index (0 for a flat profile)."""
    pts = [(i, 2 * math.log(r)) for i, r in enumerate(rms) if r > 0 and math.isfinite(r)]
    if len(pts) < 2:
        return float("nan")
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


class ResidualRecorder:
    """Forward hooks on each block that compute the stream statistics of its output right away
    (so no activation is kept alive)."""

    def __init__(self, blocks):
        self.stats: dict[int, dict[str, float]] = {}
        self.seconds = 0.0  # time spent in the hooks
        self.handles = [b.register_forward_hook(self._hook(i)) for i, b in enumerate(blocks)]

    def _hook(self, idx):
        def hook(module, args, out):
            t0 = time.perf_counter()
            h = first_tensor(out)
            if h is not None:
                self.stats[idx] = stream_stats(h)
            self.seconds += time.perf_counter() - t0

        return hook

    def remove(self) -> dict[str, list[float]]:
        """Detach the hooks and return per-layer lists ``rms``, ``max_abs``, ``max_over_median``."""
        for h in self.handles:
            h.remove()
        self.handles = []
        layers = sorted(self.stats)
        return {k: [self.stats[i][k] for i in layers] for k in ("rms", "max_abs", "max_over_median")}
