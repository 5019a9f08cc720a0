"""RMSNorm (Zhang & Sennrich 2019) with partial RMSNorm, and CRMSNorm (Jiang et al. 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normlight.norms import _fast_token, fast
from normlight.norms._common import cast, check_features, compute_dtype, fused_ok


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x_part^2) + eps) * weight (+ bias)``: scale by the root mean square, no centering.

    Defaults follow torch.nn.RMSNorm / LLaMA: eps INSIDE the root; ``eps=None`` means the machine
    epsilon of the dtype the statistics are computed in (float32 for fp32/fp16/bf16 inputs, as torch
    >= 2.x documents; float64 for float64), ``weight`` init ones, no bias. The default path runs on
    torch's fused ``rms_norm`` kernel.

    Options of the reference code (bzhangGo/rmsnorm):
    - ``eps_outside=True``: ``y = x / (rms + eps)`` (eps added to the RMS, outside the root); then
      ``eps=None`` means that code's default 1e-8 (an eps outside the root acts on the RMS, not on
      the mean square, so a much smaller value gives comparable damping).
    - ``p`` (partial RMSNorm, pRMSNorm): with ``0 < p <= 1`` the RMS is estimated on the first
      ``k = int(C * p)`` features only, and the whole vector is divided by it; ``p=None`` or ``-1``
      (default) uses all features.
    - ``bias=True`` adds a learnable offset (init zeros).

    Zhang & Sennrich 2019, "Root Mean Square Layer Normalization".
    """

    description = "RMSNorm: scale each token by its root mean square (no centering); partial-p and eps-outside options"
    paper = "Zhang & Sennrich 2019, Root Mean Square Layer Normalization"

    def __init__(
        self,
        num_features: int,
        eps: float | None = None,
        elementwise_affine: bool = True,
        bias: bool = False,
        p: float | None = -1.0,
        eps_outside: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.num_features = int(num_features)
        self.eps = None if eps is None else float(eps)
        self.eps_outside = bool(eps_outside)
        self.elementwise_affine = elementwise_affine
        self.k = self.num_features
        if p is not None and p != -1:
            if not 0 < p <= 1:
                raise ValueError(
                    f"rmsnorm p (partial RMSNorm fraction) must be in (0, 1], or -1/None to disable; got {p}"
                )
            self.k = int(self.num_features * p)
            if self.k < 1:
                raise ValueError(
                    f"rmsnorm p={p} keeps int({self.num_features} * {p}) = 0 features; use p >= {1 / self.num_features:.3g}"
                )
        self.p = p
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.ones(self.num_features, **factory)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(self.num_features, **factory)) if bias else None

    def _eps(self, dt: torch.dtype) -> float:
        if self.eps is not None:
            return self.eps
        return 1e-8 if self.eps_outside else torch.finfo(dt).eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` of shape ``(..., num_features)``."""
        check_features(x, self.num_features, "rmsnorm")  # before any path, torch's fused kernel included
        dt = compute_dtype(x)
        eps = self._eps(dt)
        plain = self.k == self.num_features and not self.eps_outside
        if plain and fast.on(self):
            w, b = cast(self.weight, dt), cast(self.bias, dt)
            return _fast_token.rms_norm(x.to(dt), w, b, eps, fast.compiled(self)).to(x.dtype)
        if plain and self.bias is None and fused_ok(x, self.weight):
            return F.rms_norm(x, (self.num_features,), self.weight, eps)
        xf = x.to(dt)
        if plain:
            y = F.rms_norm(xf, (self.num_features,), cast(self.weight, dt), eps)
        else:
            ms = xf[..., : self.k].square().mean(dim=-1, keepdim=True)
            y = xf / (ms.sqrt() + eps) if self.eps_outside else xf * torch.rsqrt(ms + eps)
            if self.weight is not None:
                y = y * self.weight.to(dt)
        if self.bias is not None:
            y = y + self.bias.to(dt)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        """``num_features, eps=..., p=..., eps_outside=...`` for ``print(model)``."""
        return (
            f"{self.num_features}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}, p={self.p}, eps_outside={self.eps_outside}"
        )


class CRMSNorm(nn.Module):
    """Compressed RMSNorm of Pre-CRMSNorm: normalize a zero-mean d-vector stored in d-1 dims.

    The input ``z`` is the compressed vector (its dropped last coordinate is ``-sum(z)``), so
    ``num_features = d - 1`` and::

        y = z / sqrt( (sum_i z_i^2 + (sum_i z_i)^2) / (num_features + 1) + eps )

    which equals ``LayerNorm_noaffine(z_full)[:-1]`` for the zero-mean full vector. eps=1e-5 inside the
    root; no affine parameters (the paper folds gamma/beta into the next linear layer);
    ``elementwise_affine=True`` adds a weight (init ones) for convenience. Statistics in float32 for
    half inputs. The model must keep its residual stream zero-mean and compressed for this to be
    LayerNorm-equivalent; on its own it is a well-defined norm.

    Jiang et al. 2023, "Pre-RMSNorm and Pre-CRMSNorm Transformers: Equivalent and Efficient Pre-LN Transformers".
    """

    description = "CRMSNorm: RMSNorm of a zero-mean vector stored compressed in d-1 dims (Pre-CRMSNorm)"
    paper = "Jiang et al. 2023, Pre-RMSNorm and Pre-CRMSNorm Transformers: Equivalent and Efficient Pre-LN Transformers"

    def __init__(self, num_features: int, eps: float = 1e-5, elementwise_affine: bool = False, device=None, dtype=None):
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.elementwise_affine = elementwise_affine
        self.weight = (
            nn.Parameter(torch.ones(self.num_features, device=device, dtype=dtype)) if elementwise_affine else None
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Normalize the compressed ``z`` of shape ``(..., num_features)``."""
        check_features(z, self.num_features, "crmsnorm")
        zf = z.to(compute_dtype(z))
        if fast.on(self):
            return _fast_token.crms_norm(zf, cast(self.weight, zf.dtype), self.eps, fast.compiled(self)).to(z.dtype)
        ms = (zf.square().sum(dim=-1, keepdim=True) + zf.sum(dim=-1, keepdim=True).square()) / (self.num_features + 1)
        y = zf * torch.rsqrt(ms + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(zf.dtype)
        return y.to(z.dtype)

    def extra_repr(self) -> str:
        """``num_features (compressed), eps=...`` for ``print(model)``."""
        return f"{self.num_features}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
