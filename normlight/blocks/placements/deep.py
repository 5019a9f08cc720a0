"""Deep-Transformer placements from torchscale: DeepNorm (DeepNet) and Sub-LN (Magneto / Foundation Transformers).

Both ship an ``init_weights(model)`` hook that rescales the "value-like" weights: the v rows of the
fused ``attn.qkv`` (its last third of rows), ``attn.out_proj``, ``mlp.fc1`` and ``mlp.fc2``.
N is the number of blocks; GPT (decoder-only) and ViT (encoder-only) use the same formulas.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from normlight.blocks.base import Block


def deepnorm_alpha(num_layers: int) -> float:
    """Residual up-weighting alpha = (2N)^(1/4) (decoder-only M=N and encoder-only N alike)."""
    return (2 * num_layers) ** 0.25


def deepnorm_beta(num_layers: int) -> float:
    """Init gain beta = (8N)^(-1/4)."""
    return (8 * num_layers) ** -0.25


def subln_gamma(num_layers: int) -> float:
    """Sub-LN init scale gamma = sqrt(log(2N)) (encoder-only or decoder-only)."""
    return math.sqrt(math.log(2 * num_layers))


def qkv_slices(attn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views of the q, k and v rows of the fused projection weight (each (dim, dim))."""
    return attn.qkv.weight.chunk(3)  # along dim 0, the output rows


class DeepNormBlock(Block):
    """DeepNorm (Wang et al. 2022): Post-LN with the residual up-weighted by alpha = (2N)^(1/4); no final norm.

    Init (``init_weights``): the paper's ``xavier_normal(gain=beta)``, beta = (8N)^(-1/4), on v, out_proj,
    fc1, fc2 and ``xavier_normal(gain=1)`` on q, k (each fused slice treated as its own (dim, dim) matrix);
    biases 0. torchscale instead divides its default (xavier_uniform, gain 1/sqrt(2) on v) init, which
    gives a smaller effective std; we follow the paper.

    ::

        x ─┬─ ×alpha ─(+)─ norm1 ─┬─ ×alpha ─(+)─ norm2 ─> out
           └── attn ───┘          └── mlp ────┘
    """

    paper = "Wang et al. 2022, DeepNet: Scaling Transformers to 1,000 Layers"

    final_norm = False

    def __init__(self, dim, num_heads, **kw):
        super().__init__(dim, num_heads, **kw)
        self.alpha = deepnorm_alpha(self.num_layers)

    def forward(self, x, pos=None):
        """norm1(alpha*x + attn(x)), then norm2(alpha*. + mlp(.))."""
        x = self.norm1(self.attn_residual(self.alpha * x, self.attn(x, pos)))
        return self.norm2(self.mlp_residual(self.alpha * x, self.mlp(x)))

    @staticmethod
    def init_weights(model: nn.Module) -> None:
        """xavier_normal with gain beta on v/out_proj/fc1/fc2, gain 1 on q/k; zero biases."""
        beta = deepnorm_beta(len(model.blocks))
        with torch.no_grad():
            for blk in model.blocks:
                q, k, v = qkv_slices(blk.attn)
                for w, gain in (
                    (q, 1.0),
                    (k, 1.0),
                    (v, beta),
                    (blk.attn.out_proj.weight, beta),
                    (blk.mlp.fc1.weight, beta),
                    (blk.mlp.fc2.weight, beta),
                ):
                    nn.init.xavier_normal_(w, gain=gain)
                for lin in (blk.attn.qkv, blk.attn.out_proj, blk.mlp.fc1, blk.mlp.fc2):
                    if lin.bias is not None:
                        nn.init.zeros_(lin.bias)


class SubLNBlock(Block):
    """Sub-LN (Magneto): Pre-LN plus one LN inside each sublayer (before W_O, size dim; before fc2, size mlp width).

    Init (``init_weights``, torchscale): q, k, v xavier_uniform gain 1/sqrt(2), out_proj xavier_uniform,
    fc1/fc2 PyTorch's default Linear init, zero attention biases; then v, out_proj, fc1 and fc2 are
    multiplied by gamma = sqrt(log(2N)) (1.7827 for N=12).

    ::

        x ──┬─────────────────────────────────────────────(+)──┬──────────────────────────────────────(+)──> out
            └─ norm1 ─ qkv ─ SDPA ─ inner_norm ─ out_proj ──┘   └─ norm2 ─ fc1 ─ act ─ mid_norm ─ fc2 ─┘
    """

    paper = "Wang et al. 2022, Foundation Transformers"

    def attention_parts(self):
        """qk-norm if requested, plus the LN before the out-projection (site attn_out)."""
        return {**super().attention_parts(), "inner_norm": self.make_norm("attn_out")}

    def mlp_parts(self):
        """LN over the MLP width before fc2 (site mlp_mid)."""
        return {"mid_norm": self.make_norm("mlp_mid", self.mlp_hidden)}

    def forward(self, x, pos=None):
        """Pre-LN data flow; the extra norms live inside attn and mlp."""
        x = self.attn_residual(x, self.attn(self.norm1(x), pos))
        return self.mlp_residual(x, self.mlp(self.norm2(x)))

    @staticmethod
    def init_weights(model: nn.Module) -> None:
        """torchscale default init, then x gamma on v, out_proj, fc1, fc2."""
        gamma = subln_gamma(len(model.blocks))
        with torch.no_grad():
            for blk in model.blocks:
                for w in qkv_slices(blk.attn):
                    nn.init.xavier_uniform_(w, gain=1 / math.sqrt(2))
                nn.init.xavier_uniform_(blk.attn.out_proj.weight)
                for lin in (blk.attn.qkv, blk.attn.out_proj):
                    if lin.bias is not None:
                        nn.init.zeros_(lin.bias)
                blk.mlp.fc1.reset_parameters()
                blk.mlp.fc2.reset_parameters()
                # torchscale scales every parameter named fc1/fc2/out_proj/v_proj, biases included
                scaled = [
                    qkv_slices(blk.attn)[2],
                    blk.attn.out_proj.weight,
                    blk.mlp.fc1.weight,
                    blk.mlp.fc2.weight,
                    blk.mlp.fc1.bias,
                    blk.mlp.fc2.bias,
                ]
                for w in scaled:
                    if w is not None:
                        w.mul_(gamma)
