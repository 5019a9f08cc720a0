"""LayerSkip (Elhoushi et al. 2024): layer dropout rising with depth, and an optional early-exit loss.

Layer dropout: block l (0-based) of L is skipped with probability ``p_l = p_max * D(l)``,
``D(l) = exp(l ln 2 / (L - 1)) - 1`` (0 for the first block, 1 for the last), per sample, with no rescaling
of the kept updates: ``x_{l+1} = x_l + M(p_l) f_l(x_l)``. The paper's time curriculum S(t) is not
implemented (S = 1: the rates hold from the first step).

Early-exit loss (``early_exit_scale`` e > 0): every layer's output goes through the model's own final norm
and head, and the training loss becomes ``sum_l w_l CE_l`` with normalized weights
``w_l = e(l) / sum_i e(i)``, ``e(l) = e * sum_{i<=l} i`` for l < L-1 and ``e(L-1) = L-1 + e * sum_{i<L-1} i``
(the paper's e_scale; weights rise with depth, the last layer keeps the largest one). Its curricula
(rotational, gradual) are not implemented: every exit is on at every step. ``exit_weight`` holds w_l.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def exit_weights(num_layers: int, scale: float) -> list[float]:
    """Normalized early-exit loss weights w_0 .. w_{L-1} (the last one is the final layer's)."""
    n = num_layers
    e = [scale * sum(range(i + 1)) for i in range(n - 1)] + [(n - 1) + scale * sum(range(n - 1))]
    total = sum(e)
    return [v / total for v in e] if total > 0 else [0.0] * (n - 1) + [1.0]


class LayerSkip(nn.Module):
    """LayerSkip layer dropout (and early-exit weights); see the module docstring.

    ::

        x ── block ── h      train: m ~ Bernoulli(1 - p_l) per sample;  out = x + m (h - x)
                             eval:  out = h
    """

    description = "LayerSkip: per-sample layer dropout rising exponentially with depth; optional early-exit loss"
    paper = "Elhoushi et al. 2024, LayerSkip: Enabling Early Exit Inference and Self-Speculative Decoding"

    def __init__(self, layer_idx: int = 0, num_layers: int = 1, p_max: float = 0.1, early_exit_scale: float = 0.0):
        super().__init__()
        if not 0.0 <= p_max < 1.0:
            raise ValueError(f"layerskip: p_max must be in [0, 1), got {p_max}")
        if not 0.0 <= early_exit_scale <= 1.0:
            raise ValueError(f"layerskip: early_exit_scale must be in [0, 1], got {early_exit_scale}")
        d = math.exp(layer_idx * math.log(2) / (num_layers - 1)) - 1.0 if num_layers > 1 else 0.0
        self.drop_rate = p_max * d
        self.exit_weight = exit_weights(num_layers, early_exit_scale)[layer_idx] if early_exit_scale > 0 else 0.0

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The next block's input given this block's input x and output h."""
        if not self.training or self.drop_rate == 0.0:
            return h
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = torch.empty(shape, device=x.device).bernoulli_(1.0 - self.drop_rate).to(x.dtype)
        return x + (h - x) * mask

    def diagnostics(self) -> dict[str, float]:
        """Drop rate and early-exit loss weight of this layer."""
        return {"drop_rate": self.drop_rate, "exit_weight": self.exit_weight}

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate:.4g}, exit_weight={self.exit_weight:.4g}"
