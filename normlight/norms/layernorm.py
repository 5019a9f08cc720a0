"""LayerNorm (Ba et al. 2016) with torch.nn.LayerNorm's defaults, on torch's fused kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normlight.norms._common import cast, compute_dtype, fused_ok


class LayerNorm(nn.Module):
    """LayerNorm over the last dim: ``y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias``.

    ``var`` is the biased variance (divide by C), eps sits inside the root, as in torch.nn.LayerNorm:
    ``eps=1e-5``, ``elementwise_affine=True``, ``bias=True``; weight init 1, bias init 0.
    Same computation in train and eval. Half-precision inputs are normalized with float32 statistics.

    Ba, Kiros & Hinton 2016, "Layer Normalization".
    """

    description = "LayerNorm: center and scale each token by its own mean and (biased) variance"
    paper = "Ba et al. 2016, Layer Normalization"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.elementwise_affine = elementwise_affine
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.ones(self.num_features, **factory)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(self.num_features, **factory)) if elementwise_affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` of shape ``(..., num_features)``."""
        shape = (self.num_features,)
        if fused_ok(x, self.weight, self.bias):  # torch's kernel already accumulates half inputs in fp32
            return F.layer_norm(x, shape, self.weight, self.bias, self.eps)
        dt = compute_dtype(x)
        return F.layer_norm(x.to(dt), shape, cast(self.weight, dt), cast(self.bias, dt), self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        """``num_features, eps=..., elementwise_affine=..., bias=...`` for ``print(model)``."""
        return f"{self.num_features}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
