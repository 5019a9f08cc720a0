"""Standard placements: Pre-LN, Post-LN, Peri-LN, Sandwich-LN, Mix-LN, LayerNorm Scaling, norm-free.

``N`` is the block's norm plugin, ``F`` a sublayer (attention or MLP). Formulas: reference norms.md sec 7.
"""

from __future__ import annotations

import math

from normlight.blocks.base import Block
from normlight.errors import PluginOptionError
from normlight.norms.layernorm_scaling import LayerNormScaling


class PreNormBlock(Block):
    """Pre-LN (Xiong et al. 2020): the norm sits inside the residual branch; final norm before the head.

    ::

        x ──┬──────────────────────(+)──┬────────────────────(+)──> out
            └─ norm1 ─ attn ────────┘   └─ norm2 ─ mlp ──────┘
    """

    paper = "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture"

    def forward(self, x, pos=None):
        """x + attn(norm1(x)), then + mlp(norm2(.))."""
        x = self.attn_residual(x, self.attn(self.norm1(x), pos))
        return self.mlp_residual(x, self.mlp(self.norm2(x)))


class PostNormBlock(Block):
    """Post-LN (Vaswani et al. 2017): the norm sits on the residual stream after each add; no final norm.

    ::

        x ──┬──────────(+)── norm1 ──┬──────────(+)── norm2 ──> out
            └── attn ───┘            └── mlp ────┘
    """

    paper = "Vaswani et al. 2017, Attention Is All You Need"

    final_norm = False

    def forward(self, x, pos=None):
        """norm1(x + attn(x)), then norm2(. + mlp(.))."""
        x = self.norm1(self.attn_residual(x, self.attn(x, pos)))
        return self.norm2(self.mlp_residual(x, self.mlp(x)))


class PeriNormBlock(Block):
    """Peri-LN (Kim et al. 2025): input AND output norm around each sublayer; the stream is never normalized.

    The embedding output is not normalized (the paper's choice there is unverified); output-norm gamma init 1.

    ::

        x ──┬──────────────────────────────(+)──┬─────────────────────────────(+)──> out
            └─ norm1 ─ attn ─ attn_out_norm ─┘   └─ norm2 ─ mlp ─ mlp_out_norm ─┘
    """

    paper = "Kim et al. 2025, Peri-LN: Revisiting Layer Normalization in the Transformer Architecture"

    def build_norms(self):
        """Input norms (attn_in, mlp_in) plus output norms (attn_out, mlp_out)."""
        super().build_norms()
        self.attn_out_norm = self.make_norm("attn_out")
        self.mlp_out_norm = self.make_norm("mlp_out")

    def forward(self, x, pos=None):
        """x + N_out(attn(N_in(x))), then the same for the MLP."""
        x = self.attn_residual(x, self.attn_out_norm(self.attn(self.norm1(x), pos)))
        return self.mlp_residual(x, self.mlp_out_norm(self.mlp(self.norm2(x))))


class SandwichNormBlock(PeriNormBlock):
    """Sandwich-LN (CogView, Ding et al. 2021): same data flow as Peri-LN (LN1/LN3 around attention, LN2/LN4 around the MLP).

    ::

        x ──┬───────────────────────(+)──┬──────────────────────(+)──> out
            └─ LN1 ─ attn ─ LN3 ─────┘   └─ LN2 ─ mlp ─ LN4 ─────┘

    CogView's N(0, 0.02/sqrt(2L)) init of the residual output projections is the models' default init.
    """

    paper = "Ding et al. 2021, CogView: Mastering Text-to-Image Generation via Transformers"


class MixNormBlock(Block):
    """Mix-LN (Li et al. 2024): Post-LN for layers with index < floor(post_fraction * L), Pre-LN after.

    Option ``post_fraction`` (default 0.25: L=12 -> 3 Post-LN blocks, L=10 -> 2). Final norm always present.

    ::

        layer_idx <  floor(f*L):  x ─┬─────(+)─ norm1 ─┬─────(+)─ norm2 ─> out       (Post-LN)
                                     └ attn ┘          └ mlp ┘
        layer_idx >= floor(f*L):  x ─┬──────────(+)─┬──────────(+)─> out             (Pre-LN)
                                     └ norm1 ─ attn ┘└ norm2 ─ mlp ┘
    """

    paper = "Li et al. 2024, Mix-LN: Unleashing the Power of Deeper Layers by Combining Pre-LN and Post-LN"

    def __init__(self, dim, num_heads, *, post_fraction: float = 0.25, **kw):
        if not 0.0 <= post_fraction <= 1.0:
            raise ValueError(f"mix placement: post_fraction must be in [0, 1], got {post_fraction}")
        super().__init__(dim, num_heads, **kw)
        self.is_post = self.layer_idx < math.floor(post_fraction * self.num_layers)

    def forward(self, x, pos=None):
        """Post-LN or Pre-LN data flow depending on the layer index."""
        if self.is_post:
            x = self.norm1(self.attn_residual(x, self.attn(x, pos)))
            return self.norm2(self.mlp_residual(x, self.mlp(x)))
        x = self.attn_residual(x, self.attn(self.norm1(x), pos))
        return self.mlp_residual(x, self.mlp(self.norm2(x)))


class LayerNormScalingBlock(Block):
    """LayerNorm Scaling (Sun et al. 2025, "The Curse of Depth"): Pre-LN with pre-norm outputs times 1/sqrt(l).

    l = layer_idx + 1 (1-based). The final norm is not scaled. The authors warn against combining it with a
    depth-scaled init, so the model draws the residual writers (out_proj, fc2) from plain N(0, 0.02)
    (``depth_scaled_init = False``). The same model as ``placement="pre"`` with ``norm="layernorm_scaling"``;
    combining this placement with that norm would scale by 1/l and is refused.

    ::

        x ──┬─────────────────────────────(+)──┬────────────────────────────(+)──> out
            └─ norm1 ─ ×1/sqrt(l) ─ attn ──┘   └─ norm2 ─ ×1/sqrt(l) ─ mlp ──┘
    """

    paper = "Sun et al. 2025, The Curse of Depth in Large Language Models"
    depth_scaled_init = False

    def __init__(self, dim, num_heads, **kw):
        super().__init__(dim, num_heads, **kw)
        if isinstance(self.norm1, LayerNormScaling):
            raise PluginOptionError(
                "placement 'lns' already scales the pre-norm outputs by 1/sqrt(l); with norm 'layernorm_scaling' "
                "they would be scaled twice (1/l). Use placement 'lns' with norm 'layernorm' or 'rmsnorm', or "
                "placement 'pre' with norm 'layernorm_scaling' (the same model)"
            )
        self.ln_scale = 1.0 / math.sqrt(self.layer_idx + 1)

    def forward(self, x, pos=None):
        """x + attn(norm1(x)/sqrt(l)), then + mlp(norm2(.)/sqrt(l))."""
        x = self.attn_residual(x, self.attn(self.norm1(x) * self.ln_scale, pos))
        return self.mlp_residual(x, self.mlp(self.norm2(x) * self.ln_scale))


class NoNormBlock(Block):
    """Norm-free residual block (as in Jha & Reagen 2024: block norms removed, the model's final norm kept).

    Pick ``norm="identity"`` to drop the final norm too.

    ::

        x ──┬──────────(+)──┬─────────(+)──> out
            └── attn ───┘   └── mlp ───┘
    """

    paper = "Jha & Reagen 2024, ReLU's Revival: On the Entropic Overload in Normalization-Free Large Language Models"

    def build_norms(self):
        """No norms inside the block."""

    def forward(self, x, pos=None):
        """x + attn(x), then + mlp(.)."""
        x = self.attn_residual(x, self.attn(x, pos))
        return self.mlp_residual(x, self.mlp(x))
