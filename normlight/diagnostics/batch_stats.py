"""Batch-statistics fluctuation for norms that set ``uses_batch_statistics`` (catalog D6).

Such a norm exposes, after each training forward, ``batch_stat`` (the per-channel variance or
quadratic mean it normalized with) and ``running_stat`` (the running estimate used in eval).
fluctuation = mean_c |batch_stat - running_stat| / (running_stat + eps).
"""

from __future__ import annotations

import torch
from torch import nn


def batch_stat_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every submodule whose class declares ``uses_batch_statistics = True``."""
    return [(n, m) for n, m in model.named_modules() if getattr(type(m), "uses_batch_statistics", False)]


@torch.no_grad()
def fluctuation(batch_stat: torch.Tensor, running_stat: torch.Tensor, eps: float = 1e-5) -> float:
    """mean over channels of |batch - running| / (running + eps)."""
    b, r = batch_stat.detach().float(), running_stat.detach().float()
    return float(((b - r).abs() / (r + eps)).mean())


def module_fluctuations(modules) -> list[float]:
    """Fluctuation of each module that has both statistics (skipped otherwise, e.g. before its first step)."""
    out = []
    for _, m in modules:
        b, r = getattr(m, "batch_stat", None), getattr(m, "running_stat", None)
        if isinstance(b, torch.Tensor) and isinstance(r, torch.Tensor):
            out.append(fluctuation(b, r))
    return out
