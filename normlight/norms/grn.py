"""GRN, Global Response Normalization (ConvNeXt V2, Woo et al. 2023): channel competition over positions."""

from __future__ import annotations

import torch
from torch import nn

from normlight.norms import _fast_group, fast
from normlight.norms._common import check_layout, compute_dtype


class GRN(nn.Module):
    """``Y = gamma * (X * N) + beta + X`` with ``G_c = ||X_c||_2`` over positions, ``N_c = G_c / (mean_c G_c + eps)``.

    Per sample: the L2 norm of each channel over all positions (aggregation), divided by its mean over
    channels (divisive normalization), scales the input (calibration); a residual keeps X. ``gamma``
    and ``beta`` are per channel, init 0, so GRN starts as the identity. ``eps=1e-6``. Needs positions:
    input ``(N, *positions, C)`` (or ``(N, C, *spatial)`` with ``layout="channels_first"``).
    Statistics in float32 for half inputs.

    Woo et al. 2023, "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders".
    """

    description = (
        "Global Response Norm: per-channel L2 over positions, divided by its channel mean; residual, zero-init"
    )
    paper = "Woo et al. 2023, ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders"

    def __init__(self, num_features: int, eps: float = 1e-6, layout: str = "channels_last", device=None, dtype=None):
        super().__init__()
        self.num_features, self.eps = int(num_features), float(eps)
        self.layout = check_layout(layout)
        self.gamma = nn.Parameter(torch.zeros(self.num_features, device=device, dtype=dtype))
        self.beta = nn.Parameter(torch.zeros(self.num_features, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply GRN to ``x`` of shape ``(N, *positions, C)`` (or ``(N, C, *spatial)`` channels-first)."""
        if x.ndim < 3:
            raise ValueError(
                f"grn needs position dims: (N, *positions, C) or (N, C, *spatial); got shape {tuple(x.shape)}"
            )
        first = self.layout == "channels_first"
        if fast.on(self) and not first and x.shape[-1] == self.num_features:
            xf = x.to(compute_dtype(x))
            g, b = self.gamma.to(xf.dtype), self.beta.to(xf.dtype)
            return _fast_group.grn(xf, g, b, self.eps, fast.compiled(self)).to(x.dtype)
        cdim = 1 if first else -1
        pos = tuple(range(2, x.ndim)) if first else tuple(range(1, x.ndim - 1))
        shape = [1] * x.ndim
        shape[cdim] = self.num_features
        xf = x.to(compute_dtype(x))
        g = torch.linalg.vector_norm(xf, dim=pos, keepdim=True)
        n = g / (g.mean(dim=cdim, keepdim=True) + self.eps)
        gamma, beta = self.gamma.to(xf.dtype).view(shape), self.beta.to(xf.dtype).view(shape)
        return (gamma * (xf * n) + beta + xf).to(x.dtype)

    def extra_repr(self) -> str:
        """``num_features, eps=..., layout=...`` for ``print(model)``."""
        return f"{self.num_features}, eps={self.eps}, layout={self.layout}"
