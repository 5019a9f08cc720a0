"""LAuReL (Menghani et al. 2025): a learned generalization of the residual connection.

``x_{i+1} = alpha * f(x_i) + g(x_i)``; variants (option ``variant``):

- ``rw`` (residual weights): ``g = beta * x``; learnable scalars alpha, beta (init 1: the plain residual);
- ``lr`` (low rank): ``g = x + B A x`` with A (r x D), B (D x r); alpha = 1;
- ``rw_lr``: ``alpha * f(x) + beta * (x + B A x)``.

Applied at every residual branch (attention and MLP); ``rank`` defaults to min(16, D). B starts at zero, so every variant starts as the
plain residual; A gets PyTorch's default Linear init. The paper's exact initialization of A and any
normalization of alpha/beta are not in our references; this follows its formulas as written.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from normlight.residuals.base import Residual

VARIANTS = ("rw", "lr", "rw_lr")


class LAuReL(Residual):
    """LAuReL residual; see the module docstring.

    ::

        x ──┬── (x alpha) <── F(x)            rw:    alpha F(x) + beta x
            ├── x beta ────────────(+)──> y   lr:    F(x) + x + B A x
            └── A ── B ────────────┘          rw_lr: alpha F(x) + beta (x + B A x)
    """

    description = "LAuReL: alpha F(x) + beta x (rw), F(x) + x + BAx (lr) or both (rw_lr)"
    paper = "Menghani et al. 2025, LAuReL: Learned Augmented Residual Layer"

    def __init__(self, dim: int, variant: str = "rw", rank: int | None = None, device=None, dtype=None):
        super().__init__(dim)
        if variant not in VARIANTS:
            raise ValueError(f"laurel variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        kw = dict(device=device, dtype=dtype)
        if variant in ("rw", "rw_lr"):
            self.alpha = nn.Parameter(torch.ones((), **kw))
            self.beta = nn.Parameter(torch.ones((), **kw))
        if variant in ("lr", "rw_lr"):
            rank = min(16, dim) if rank is None else rank
            if not 1 <= rank <= dim:
                raise ValueError(f"laurel rank must be in [1, dim={dim}], got {rank}")
            self.rank = int(rank)
            self.A = nn.Parameter(torch.empty(rank, dim, **kw))
            self.B = nn.Parameter(torch.zeros(dim, rank, **kw))
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's default

    def forward(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        """The LAuReL combination of stream and branch."""
        g = x
        if self.variant != "rw":
            g = x + (x @ self.A.to(x.dtype).t()) @ self.B.to(x.dtype).t()
        if self.variant == "lr":
            return branch + g
        return self.alpha.to(x.dtype) * branch + self.beta.to(x.dtype) * g

    def diagnostics(self) -> dict[str, float]:
        """alpha, beta (rw variants) and the Frobenius norm of B A (lr variants)."""
        out = {}
        if self.variant != "lr":
            out.update(alpha=float(self.alpha.detach()), beta=float(self.beta.detach()))
        if self.variant != "rw":
            out["lowrank_norm"] = float((self.B.detach() @ self.A.detach()).norm())
        return out

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}" + (f", rank={self.rank}" if self.variant != "rw" else "")
