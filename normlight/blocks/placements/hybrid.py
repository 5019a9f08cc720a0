"""HybridNorm (Zhuo et al. 2025): QKV-norm inside attention, Post-Norm around the FFN."""

from __future__ import annotations

from normlight.blocks.base import Block


class HybridNormBlock(Block):
    """HybridNorm (Zhuo et al. 2025): QKV-norm in attention (no attention-input norm), Post-Norm FFN.

    q, k, v are each normalized per head (size head_dim, before RoPE); the FFN is Post-Norm with the
    NORMALIZED stream carried forward. Final norm present.

    q/k use the ``qk_norm`` spec when given, otherwise the block norm; v always uses the block norm
    (all three at site "qk"). Option ``star=True`` (HybridNorm*): block 0 is plain Pre-Norm for both
    sublayers (QKV-norm still on). Option ``attn_bias`` (default False, as the reference OLMo config,
    which has no biases): with bias-free projections the attention is invariant to the scale of its
    input, Attn(cX) = Attn(X) for c > 0, the property QKV-norm is for; ``attn_bias=True`` follows the
    model's ``bias`` and loses it.

    ::

        x ──┬────────────────────────────────(+)── norm2 ──┬─────────(+)──> out
            └─ qkv ─ q_norm,k_norm,v_norm ─ SDPA ─ W_O ─┘   └── mlp ───┘

        star, block 0:  x ─┬───────────────(+)─┬──────────────(+)─> out
                           └─ norm1 ─ attn ─┘   └─ norm2 ─ mlp ─┘
    """

    paper = "Zhuo et al. 2025, HybridNorm: Towards Stable and Efficient Transformer Training via Hybrid Normalization"

    def __init__(self, dim, num_heads, *, star: bool = False, attn_bias: bool = False, **kw):
        self.star = bool(star) and kw.get("layer_idx", 0) == 0
        self.attn_bias = bool(attn_bias)
        super().__init__(dim, num_heads, **kw)

    def build_attention(self, *, bias, **kw):
        """Attention with bias-free q/k/v/out projections unless ``attn_bias=True``."""
        return super().build_attention(bias=bias and self.attn_bias, **kw)

    def attention_parts(self):
        """Per-head q, k, v norms."""
        head_dim = self.dim // self.num_heads
        qk = self.make_qk_norm if self.qk_norm_spec is not None else (lambda: self.make_norm("qk", head_dim))
        return {"q_norm": qk(), "k_norm": qk(), "v_norm": self.make_norm("qk", head_dim)}

    def build_norms(self):
        """norm2 on the stream after attention; norm1 only in the HybridNorm* first block."""
        if self.star:
            self.norm1 = self.make_norm("attn_in")
        self.norm2 = self.make_norm("mlp_in")

    def forward(self, x, pos=None):
        """h = norm2(x + attn(x)); h + mlp(h)  (HybridNorm* block 0: Pre-Norm)."""
        if self.star:
            x = self.attn_residual(x, self.attn(self.norm1(x), pos))
            return self.mlp_residual(x, self.mlp(self.norm2(x)))
        h = self.norm2(self.attn_residual(x, self.attn(x, pos)))
        return self.mlp_residual(h, self.mlp(h))
