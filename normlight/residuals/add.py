"""Residual connections that only scale the branch: add, scaled, depth_scaled, gate.

``y = x + s * F(x)`` with s = 1 (add), a constant (scaled), 1/sqrt(L) (depth_scaled) or a learnable scalar
(gate). ``x`` is whatever the placement joins the branch to (DeepNorm passes ``alpha * x``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from normlight.residuals.base import Residual


class Add(Residual):
    """The canonical residual connection ``y = x + F(x)`` (He et al. 2016); the default of every placement."""

    description = "x + F(x): the canonical residual connection (default)"
    paper = "He et al. 2016, Deep Residual Learning for Image Recognition"

    def forward(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """x + branch."""
        return x + branch


class Scaled(Residual):
    """Residual scaling by a constant: ``y = x + scale * F(x)`` (Szegedy et al. 2017, Inception-ResNet).

    The paper scales residuals down "before adding them to the previous layer activation" and picks factors
    "between 0.1 and 0.3"; the default 0.2 is the middle of that range.
    """

    description = "x + scale * F(x), constant scale (Inception-ResNet activation scaling)"
    paper = "Szegedy et al. 2017, Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning"

    def __init__(self, dim: int | None = None, scale: float = 0.2):
        super().__init__(dim)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """x + scale * branch."""
        return x + self.scale * branch

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class DepthScaled(Residual):
    """Depth-muP branch multiplier: ``y = x + (a / sqrt(L)) * F(x)``, L = number of blocks (Yang et al. 2023).

    Only the block multiplier of Depth-muP; its depth-dependent learning-rate scaling is the optimizer's.
    """

    description = "x + a/sqrt(L) * F(x), L = number of blocks (Depth-muP block multiplier)"
    paper = "Yang et al. 2023, Tensor Programs VI: Feature Learning in Infinite-Depth Neural Networks"

    def __init__(self, dim: int | None = None, num_layers: int = 1, multiplier: float = 1.0):
        super().__init__(dim)
        if num_layers < 1:
            raise ValueError(f"depth_scaled needs num_layers >= 1, got {num_layers}")
        self.scale = float(multiplier) / math.sqrt(num_layers)

    def forward(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """x + branch / sqrt(L)."""
        return x + self.scale * branch

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}"


class Gate(Residual):
    """A learnable scalar gate on the branch: ``y = x + g * F(x)``, g initialised at 0 (ReZero-like).

    One gate per residual branch (attention and MLP each), composable with any placement: unlike the
    ``rezero`` placement it keeps the placement's norms (Bachlechner et al. 2020 put the gate on norm-free blocks).
    """

    description = "x + g * F(x), learnable scalar g per branch, init 0 (ReZero-like, any placement)"
    paper = "Bachlechner et al. 2020, ReZero is All You Need: Fast Convergence at Large Depth"

    def __init__(self, dim: int | None = None, init: float = 0.0):
        super().__init__(dim)
        self.gate = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """x + g * branch."""
        return x + self.gate.to(branch.dtype) * branch

    def diagnostics(self) -> dict[str, float]:
        """The learned gate."""
        return {"gate": float(self.gate.detach())}
