"""The identity token mixer: no information moves between tokens."""

from __future__ import annotations

import torch
from torch import nn


class IdentityMixer(nn.Module):
    """``mixer(x) = x`` (PoolFormer's "identity mapping" token-mixer ablation; IdentityFormer, Yu et al. 2024).

    Each token only goes through the MLPs, so the readout sees token-wise features only; causal by
    construction. In a Pre-LN block the attention sublayer becomes ``x + N(x)``.

    ::

        x (B,T,D) ──────────────────────> x
    """

    description = "identity token mixer: no mixing across tokens (the MLP-only ablation)"
    paper = "Yu et al. 2022, MetaFormer Is Actually What You Need for Vision (identity-mapping ablation)"
    supports_causal = True

    def __init__(self, dim: int | None = None):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """x (plus ``pos`` when given, as for attention)."""
        return x if pos is None else x + pos
