"""Generalized-mean poolings: GeM (one learnable exponent) and Group GeM (one exponent per channel group).

``GeM_p(x)_c = ((1/N) sum_n max(x_{n,c}, eps)^p)^(1/p)``: p = 1 is the mean, p -> inf the max (Radenovic et
al. 2019). GeM assumes non-negative inputs (CNN features after ReLU); ViT tokens are signed, so they are
clamped at ``eps`` first, which drops their negative parts (the GGeM paper's exact handling of negative
activations is not in our references; the clamp is GeM's own). The final norm runs per token before pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from normlight.poolings.base import Pooling


class GeM(Pooling):
    """GeM over tokens with a learnable scalar p (init 3): ``(mean_t clamp(x, eps)^p)^(1/p)``.

    ::

        x_1 .. x_T ── final norm ── clamp(eps) ── ^p ── mean over t ── ^(1/p) ──> y
    """

    description = "generalized mean over tokens, learnable p (init 3)"
    paper = "Radenovic et al. 2019, Fine-tuning CNN Image Retrieval with No Human Annotation"

    def __init__(self, dim: int | None = None, p: float = 3.0, eps: float = 1e-6, norm_position: str | None = None):
        super().__init__(dim, norm_position=norm_position)
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, D)."""
        return x.clamp(min=self.eps).pow(self.p).mean(dim=1).pow(1.0 / self.p)

    def diagnostics(self) -> dict[str, float]:
        """The learned exponent."""
        return {"p": float(self.p.detach())}


class GGeM(Pooling):
    """Group GeM (Ko et al. 2022): channels in G groups, each with its own learnable p (init 3).

    G defaults to the number of attention heads (the model passes ``num_heads``), because multi-head
    attention already groups the channels by head: channel c of D uses ``p_{c // (D/G)}``.

    ::

        x (B,T,D) ── final norm ── view (B,T,G,D/G) ── clamp(eps) ── ^p_g ── mean over t ── ^(1/p_g) ──> y (B,D)
    """

    description = "group generalized mean: one learnable p per channel group (groups = heads)"
    paper = "Ko et al. 2022, Group Generalized Mean Pooling for Vision Transformer"

    def __init__(
        self,
        dim: int,
        groups: int | None = None,
        p: float = 3.0,
        eps: float = 1e-6,
        num_heads: int | None = None,
        norm_position: str | None = None,
    ):
        super().__init__(dim, norm_position=norm_position)
        groups = groups or num_heads
        if not groups:
            raise ValueError("ggem needs `groups` (or a model that passes num_heads)")
        if dim % groups:
            raise ValueError(f"ggem: groups={groups} does not divide dim={dim}")
        self.groups, self.eps = int(groups), eps
        self.p = nn.Parameter(torch.full((self.groups,), float(p)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, D)."""
        b, n, d = x.shape
        p = self.p.view(1, 1, self.groups, 1)
        xg = x.clamp(min=self.eps).view(b, n, self.groups, d // self.groups)
        return xg.pow(p).mean(dim=1).pow(1.0 / p[0]).reshape(b, d)

    def diagnostics(self) -> dict[str, float]:
        """The learned exponent of every group."""
        return {f"p_g{i}": float(v) for i, v in enumerate(self.p.detach())}

    def extra_repr(self) -> str:
        return f"groups={self.groups}, {super().extra_repr()}"
