"""NormFormer (Shleifer et al. 2021): Pre-LN plus three extra normalization operations per block."""

from __future__ import annotations

import torch
from torch import nn

from normlight.blocks.base import Block


class NormFormerBlock(Block):
    """Pre-LN + head-wise scaling + LN after attention + LN after the MLP activation (+ optional residual scale).

    Head scale ``attn.head_scale`` (one per head, init 1) uses the PAPER ordering,
    ``Concat(g_1 h_1, ..., g_n h_n) W_O`` (before the out-projection); fairseq applies it after W_O
    for speed, which is not equivalent. ``scale_resids=True`` adds fairseq's per-channel residual
    weight on the MLP sublayer (``x = mlp_out + w_resid * x``, init 1; the paper uses it only for small models).
    The attention output is dropped out AFTER ``attn_out_norm``, in fairseq's order (LN, then dropout).

    ::

        x ──┬────────────────────────────────────────────────────────────────(+)──┬──────────────────────────(+)──> out
            └─ norm1 ─ qkv ─ SDPA ─ ×g_head ─ W_O ─ attn_out_norm ─ dropout ──┘   │                 [×w_resid]│
                                                                                  └─ norm2 ─ fc1 ─ act ─ mid_norm ─ fc2 ┘
    """

    paper = "Shleifer et al. 2021, NormFormer: Improved Transformer Pretraining with Extra Normalization"

    def __init__(self, dim, num_heads, *, scale_resids: bool = False, **kw):
        super().__init__(dim, num_heads, **kw)
        self.resid_scale = nn.Parameter(torch.ones(dim)) if scale_resids else None

    def attention_parts(self):
        """qk-norm if requested, plus the per-head scale."""
        return {**super().attention_parts(), "head_scale": True}

    def build_attention(self, **kw):
        """Attention whose output dropout moves after ``attn_out_norm`` (fairseq's order)."""
        attn = super().build_attention(**kw)
        self.attn_out_drop, attn.resid_dropout = attn.resid_dropout, nn.Identity()
        return attn

    def mlp_parts(self):
        """LN over the MLP width after the activation (site mlp_mid)."""
        return {"mid_norm": self.make_norm("mlp_mid", self.mlp_hidden)}

    def build_norms(self):
        """Pre-norms plus the post-attention norm (site attn_out)."""
        super().build_norms()
        self.attn_out_norm = self.make_norm("attn_out")

    def forward(self, x, pos=None):
        """x + dropout(LN(attn(norm1(x)))), then mlp (with mid LN) + [w_resid *] x."""
        x = self.attn_residual(x, self.attn_out_drop(self.attn_out_norm(self.attn(self.norm1(x), pos))))
        resid = x if self.resid_scale is None else x * self.resid_scale.to(x.dtype)
        return self.mlp_residual(resid, self.mlp(self.norm2(x)))
