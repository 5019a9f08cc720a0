"""Stochastic depth (Huang et al. 2016) and drop-path: skip a block's residual update at random while training.

A block maps x to h; its residual update is ``f = h - x`` (for any placement, the whole block is one
residual function here, as in the paper's ResNet blocks). Rates are per block, ``l = layer_idx + 1`` of L.
The block always runs (a skipped block returns ``x + 0 * f``), so every parameter still takes part in the
backward pass and DistributedDataParallel sees no unused parameter.
"""

from __future__ import annotations

import torch
from torch import nn


class StochasticDepth(nn.Module):
    """Huang et al. 2016: survival probability ``p_l = 1 - (l / L) (1 - p_L)`` (linear decay, p_L = 0.5).

    Training: one Bernoulli(p_l) draw per mini-batch decides whether block l's update is kept (``h``) or
    dropped (``x``). Evaluation: the expected update, ``x + p_l (h - x)`` ("the outputs of each ResBlock are
    re-calibrated by its survival probability"). ``drop_rate = 1 - p_l`` is logged as a diagnostic.

    ::

        x ── block ── h      train: b ~ Bernoulli(p_l);  out = h if b else x
                             eval:  out = x + p_l (h - x)
    """

    description = "stochastic depth: drop a block per mini-batch, survival 1 - l/L (1 - p_L), test-time scaling"
    paper = "Huang et al. 2016, Deep Networks with Stochastic Depth"

    def __init__(self, layer_idx: int = 0, num_layers: int = 1, p_last: float = 0.5):
        super().__init__()
        if not 0.0 <= p_last <= 1.0:
            raise ValueError(f"stochastic_depth: p_last (survival of the last block) must be in [0, 1], got {p_last}")
        self.survival = 1.0 - (layer_idx + 1) / num_layers * (1.0 - p_last)
        self.drop_rate = 1.0 - self.survival

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The next block's input given this block's input x and output h."""
        if not self.training:
            return h if self.survival == 1.0 else x + self.survival * (h - x)
        if torch.rand(()) < self.survival:
            return h
        return x + 0.0 * (h - x)

    def diagnostics(self) -> dict[str, float]:
        """The probability that this block is dropped in a training step."""
        return {"drop_rate": self.drop_rate}

    def extra_repr(self) -> str:
        return f"survival={self.survival:.4g}"


class DropPath(nn.Module):
    """Drop-path (per-sample stochastic depth with inverted scaling, as in DeiT / timm's ``DropPath``).

    Rate of block l (0-based) of L: ``rate * l / (L - 1)`` (0 for the first block, ``rate`` for the last, as
    timm's linear schedule). Training: each sample keeps the update with probability ``k = 1 - rate_l`` and a
    kept update is divided by k; evaluation: the plain block output h.

    ::

        x ── block ── h      train: m ~ Bernoulli(k) per sample;  out = x + m (h - x) / k
                             eval:  out = h
    """

    description = "drop-path: per-sample block drop with inverted scaling, rate linear over depth (DeiT/timm)"
    paper = "Huang et al. 2016, Deep Networks with Stochastic Depth (per-sample form of Touvron et al. 2021, DeiT)"

    def __init__(self, layer_idx: int = 0, num_layers: int = 1, rate: float = 0.1):
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_path: rate must be in [0, 1), got {rate}")
        self.drop_rate = rate * layer_idx / (num_layers - 1) if num_layers > 1 else 0.0

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The next block's input given this block's input x and output h."""
        if not self.training or self.drop_rate == 0.0:
            return h
        keep = 1.0 - self.drop_rate
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device).bernoulli_(keep).to(x.dtype)
        return x + (h - x) * (mask / keep)

    def diagnostics(self) -> dict[str, float]:
        """The probability that a sample skips this block in a training step."""
        return {"drop_rate": self.drop_rate}

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate:.4g}"
