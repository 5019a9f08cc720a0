"""A pooling plugin that is not in normlight's core: log-sum-exp pooling (a smooth max over tokens).

Written against normlight's pooling contract (docs/plugins.md in normlight): ``LSEPool(dim, **options)``
returns an ``nn.Module`` mapping tokens ``(B, T, D)`` to ``(B, D)`` and declares where the model's final norm
sits (``norm_position``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LSEPool(nn.Module):
    """Log-sum-exp pooling (Pinheiro & Collobert 2015): ``y_c = (1/r) log((1/T) sum_t exp(r x_{t,c}))``.

    ``r`` sets the sharpness: r -> 0 gives the mean, r -> inf the max over tokens. Computed in fp32 with the
    max subtracted first, so large ``r * x`` does not overflow. The final norm runs on the tokens first.
    """

    description = "log-sum-exp pooling: a smooth max over tokens with sharpness r"
    paper = "Pinheiro & Collobert 2015, From Image-level to Pixel-level Labeling with Convolutional Networks"
    norm_position = "pre"
    uses_class_token = False
    needs_hidden_states = False

    def __init__(self, dim: int, r: float = 5.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"lse pooling: r must be positive, got {r}")
        self.dim, self.r = int(dim), float(r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D)."""
        z = self.r * x.to(torch.promote_types(x.dtype, torch.float32))
        y = (torch.logsumexp(z, dim=1) - math.log(x.shape[1])) / self.r
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, r={self.r}"
