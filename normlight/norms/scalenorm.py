"""ScaleNorm (Nguyen & Salazar 2019) and the unit L2 norm of nGPT (Loshchilov et al. 2024)."""

from __future__ import annotations

import math

import torch
from torch import nn

from normlight.norms import _fast_token, fast
from normlight.norms._common import check_features, compute_dtype


class ScaleNorm(nn.Module):
    """``y = g * x / max(||x||_2, eps)``: project each token onto a sphere of learnable radius ``g``.

    ``g`` is ONE scalar, init ``sqrt(num_features)`` (so at init ScaleNorm equals an eps-free RMSNorm).
    ``eps=1e-5`` is a CLAMP on the L2 norm, not added to it. Norm computed in float32 for half inputs.

    Nguyen & Salazar 2019, "Transformers without Tears: Improving the Normalization of Self-Attention".
    """

    description = "ScaleNorm: g * x / max(||x||, eps) with one learnable scalar g (init sqrt(d))"
    paper = "Nguyen & Salazar 2019, Transformers without Tears: Improving the Normalization of Self-Attention"

    def __init__(self, num_features: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.g = nn.Parameter(torch.full((1,), math.sqrt(self.num_features), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` of shape ``(..., num_features)``."""
        check_features(x, self.num_features, "scalenorm")
        xf = x.to(compute_dtype(x))
        if fast.on(self):
            return _fast_token.l2_scale(xf, self.g.to(xf.dtype), self.eps, fast.compiled(self)).to(x.dtype)
        norm = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).clamp_min(self.eps)
        return (xf * (self.g.to(xf.dtype) / norm)).to(x.dtype)

    def extra_repr(self) -> str:
        """``num_features, eps=...`` for ``print(model)``."""
        return f"{self.num_features}, eps={self.eps}"


class L2Norm(nn.Module):
    """``y = x / max(||x||_2, eps)``: unit-norm tokens, nGPT's ``justnorm``; no parameters.

    Default ``eps=0.0`` is faithful to nGPT, which divides by the bare norm: an all-zero token then
    gives NaN (0/0), which a divergence guard reports. Pass e.g. ``eps=1e-12`` to clamp the norm
    instead (zero tokens then stay zero). Norm computed in float32 for half inputs.

    Loshchilov, Hsieh, Sun & Ginsburg 2024, "nGPT: Normalized Transformer with Representation Learning
    on the Hypersphere".
    """

    description = "unit L2 norm x / ||x|| (nGPT's justnorm), no parameters; eps=0 as in nGPT"
    paper = "Loshchilov et al. 2024, nGPT: Normalized Transformer with Representation Learning on the Hypersphere"

    def __init__(self, num_features: int, eps: float = 0.0, device=None, dtype=None):
        super().__init__()
        if eps < 0:
            raise ValueError(f"l2norm eps must be >= 0 (a clamp on the norm), got {eps}")
        self.num_features = int(num_features)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each ``(..., num_features)`` vector to unit L2 norm."""
        check_features(x, self.num_features, "l2norm")
        xf = x.to(compute_dtype(x))
        if fast.on(self):
            return _fast_token.l2_scale(xf, None, self.eps, fast.compiled(self)).to(x.dtype)
        # a clamp at eps=0 leaves every norm (>= 0, or NaN) as it is: nGPT's bare division
        norm = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).clamp_min(self.eps)
        return (xf / norm).to(x.dtype)

    def extra_repr(self) -> str:
        """``num_features, eps=...`` for ``print(model)``."""
        return f"{self.num_features}, eps={self.eps}"
