"""Norm-free residual gates initialised at zero: ReZero and SkipInit. No norms in the block and no final norm."""

from __future__ import annotations

import torch
from torch import nn

from normlight.blocks.base import Block


class ReZeroBlock(Block):
    """ReZero (Bachlechner et al. 2020): ONE scalar ``resweight`` per block, shared by both sublayers, init 0.

    ::

        x ──┬─────────────────(+)──┬─────────────────(+)──> out
            └─ attn ─ ×alpha ──┘   └─ mlp ─ ×alpha ──┘        (same alpha)
    """

    paper = "Bachlechner et al. 2020, ReZero is All You Need: Fast Convergence at Large Depth"

    final_norm = False

    def __init__(self, dim, num_heads, **kw):
        super().__init__(dim, num_heads, **kw)
        self.resweight = nn.Parameter(torch.zeros(()))

    def build_norms(self):
        """No norms."""

    def forward(self, x, pos=None):
        """x + a*attn(x), then + a*mlp(.)."""
        # a 0-dim float32 gate times a bf16 tensor stays bf16 (dimensioned operands set the dtype): no cast needed
        x = self.attn_residual(x, self.resweight * self.attn(x, pos))
        return self.mlp_residual(x, self.resweight * self.mlp(x))


class SkipInitBlock(Block):
    """SkipInit (De & Smith 2020): one learnable scalar per residual BRANCH (attention, MLP), init 0.

    ::

        x ──┬─────────────────────(+)──┬───────────────────(+)──> out
            └─ attn ─ ×attn_gain ──┘   └─ mlp ─ ×mlp_gain ──┘
    """

    paper = "De & Smith 2020, Batch Normalization Biases Residual Blocks Towards the Identity Function in Deep Networks"

    final_norm = False

    def __init__(self, dim, num_heads, **kw):
        super().__init__(dim, num_heads, **kw)
        self.attn_gain = nn.Parameter(torch.zeros(()))
        self.mlp_gain = nn.Parameter(torch.zeros(()))

    def build_norms(self):
        """No norms."""

    def forward(self, x, pos=None):
        """x + g_attn*attn(x), then + g_mlp*mlp(.)."""
        x = self.attn_residual(x, self.attn_gain * self.attn(x, pos))  # 0-dim gates: no cast (see ReZero)
        return self.mlp_residual(x, self.mlp_gain * self.mlp(x))
