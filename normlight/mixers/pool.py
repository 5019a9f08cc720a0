"""PoolFormer's token mixer (Yu et al. 2022, "MetaFormer Is Actually What You Need for Vision")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PoolMixer(nn.Module):
    """``AvgPool_k(x) - x`` over the 2-D token grid (stride 1, padding k//2, padding not counted), k = 3.

    The ``- x`` cancels the identity the block's residual adds back. Tokens must form a square grid (a ViT
    without a class token); the average mixes neighbours on both sides, so it cannot be causal. PoolFormer's
    norm is GroupNorm with one group: ``norm: groupnorm, norm_kwargs: {num_groups: 1}``.

    ::

        x (B,T,D) ── grid (B,D,√T,√T) ── AvgPool 3x3 ── (-) x ── (B,T,D)
    """

    description = "PoolFormer: AvgPool(x) - x over the token grid (no attention; ViT only)"
    paper = "Yu et al. 2022, MetaFormer Is Actually What You Need for Vision"
    supports_causal = False
    needs_grid = True

    def __init__(self, dim: int, pool_size: int = 3):
        super().__init__()
        if pool_size < 1 or pool_size % 2 == 0:
            raise ValueError(f"pool mixer: pool_size must be an odd positive integer, got {pool_size}")
        self.dim, self.pool_size = int(dim), int(pool_size)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); ``pos`` is added to the input first, as for attention (LaPE)."""
        if pos is not None:
            x = x + pos
        b, t, d = x.shape
        side = math.isqrt(t)
        if side * side != t:
            raise ValueError(
                f"pool mixer needs the tokens on a square grid, got {t} tokens "
                "(a class token or a sequence model has no grid)"
            )
        grid = x.transpose(1, 2).reshape(b, d, side, side)
        k = self.pool_size
        y = F.avg_pool2d(grid, k, stride=1, padding=k // 2, count_include_pad=False) - grid
        return y.reshape(b, d, t).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"{self.dim}, pool_size={self.pool_size}"
