"""DyT, Dynamic Tanh (Zhu et al. 2025): an element-wise, statistics-free replacement for LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from normlight.norms import _fast_token, fast
from normlight.norms._common import cast, compute_dtype


class DyT(nn.Module):
    """``y = weight * tanh(alpha * x) + bias``.

    ``alpha`` is ONE learnable scalar (shape (1,)), init ``alpha_init`` (0.5, the paper's default);
    ``weight`` init ones and ``bias`` init zeros, per channel. ``bias=False`` gives the paper's LLaMA
    variant, which also sets alpha per role (e.g. 0.8 attention-input / 0.2 FFN-input / 0.2 final for
    LLaMA2-7B): pass ``alpha_init`` per site in that case. No statistics, so train == eval; half inputs
    are computed in float32 and cast back.

    Zhu, Chen, He, LeCun & Liu 2025, "Transformers without Normalization".
    """

    description = "Dynamic Tanh: weight * tanh(alpha * x) + bias with one learnable scalar alpha, no statistics"
    paper = "Zhu et al. 2025, Transformers without Normalization"

    def __init__(self, num_features: int, alpha_init: float = 0.5, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.num_features = int(num_features)
        factory = dict(device=device, dtype=dtype)
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init), **factory))
        self.weight = nn.Parameter(torch.ones(self.num_features, **factory))
        self.bias = nn.Parameter(torch.zeros(self.num_features, **factory)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Squash ``x`` of shape ``(..., num_features)`` element-wise."""
        dt = compute_dtype(x)
        if fast.on(self):
            args = (x.to(dt), self.alpha.to(dt), self.weight.to(dt), cast(self.bias, dt))
            return _fast_token.dyt(*args, fast.compiled(self)).to(x.dtype)
        t = torch.tanh(self.alpha.to(dt) * x.to(dt))
        y = t * self.weight.to(dt) if self.bias is None else torch.addcmul(self.bias.to(dt), t, self.weight.to(dt))
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        """``num_features, bias=...`` for ``print(model)``."""
        return f"{self.num_features}, bias={self.bias is not None}"
