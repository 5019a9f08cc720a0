"""nGPT (Loshchilov et al. 2024): the hidden state lives on the unit sphere; no norm layers at all.

Scaling-parameter trick: every learned scale s is stored as a parameter initialised at its own
``scaling`` and used as ``s = p * (s_init / scaling)``, so its effective init is ``s_init`` while the
stored value (what the optimizer sees, so what sets Adam's relative step) starts at ``scaling``. As in
the NVIDIA reference: alpha_A, alpha_M (init 0.05), s_qk and s_z (init 1) use ``base_scale``; s_uv
(init 1) uses scaling 1.0 (``suv_init_scaling``). ``base_scale`` is a placement option, default
1/sqrt(1024) as hard-coded in the reference config; the paper's rule is 1/sqrt(d_model)
(``placement_kwargs={"base_scale": d_model ** -0.5}``). It is also the init std of every matrix.
``justnorm(x) = x / ||x||_2`` has no eps (as in the reference).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from normlight.blocks.attention import Attention
from normlight.blocks.base import Block

BASE_SCALE = 1.0 / math.sqrt(1024)
ALPHA_INIT = 0.05  # eigen learning rates alpha_A, alpha_M


def justnorm(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """x / ||x||_2 along ``dim`` (no eps)."""
    return x / x.norm(dim=dim, keepdim=True)


class ScaledParam(nn.Module):
    """A learned vector with the scaling-parameter trick: stored ``p`` starts at ``scaling``, ``effective = p * (init / scaling)``."""

    def __init__(self, size: int | tuple, init: float, scaling: float = BASE_SCALE):
        super().__init__()
        if scaling <= 0:
            raise ValueError(f"ngpt: a parameter scaling must be > 0, got {scaling}")
        self.init, self.scaling = init, scaling
        self.p = nn.Parameter(torch.full(size if isinstance(size, tuple) else (size,), float(scaling)))

    def effective(self) -> torch.Tensor:
        """The scale actually used in the forward."""
        return self.p * (self.init / self.scaling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x * effective scale (broadcast over the last dim)."""
        return x * self.effective().to(x.dtype)


class NGPTAttention(Attention):
    """Attention with ``q, k = s_qk * justnorm(.)`` per head after RoPE and softmax scale sqrt(head_dim)."""

    def __init__(self, dim, num_heads, *, base_scale: float = BASE_SCALE, **kw):
        super().__init__(dim, num_heads, **kw)
        self.scale = math.sqrt(self.head_dim)
        self.sqk = ScaledParam((num_heads, 1, self.head_dim), 1.0, base_scale)

    def project(self, x):
        """q, k normalized per head and scaled by s_qk (effective init 1); v as projected."""
        q, k, v = super().project(x)
        s = self.sqk.effective().to(q.dtype)
        return s * justnorm(q), s * justnorm(k), v


class NGPTMLP(nn.Module):
    """``uv = s_uv * sqrt(dim) * fc1(h)``; ``u, v = chunk(uv)``; ``fc2(u * silu(v))`` (s_uv init 1, stored at
    scaling 1 as the reference's ``suv_init_scaling``, on both halves)."""

    def __init__(self, dim: int, hidden: int, *, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)
        self.suv = ScaledParam(2 * hidden, 1.0, scaling=1.0)
        self.sqrt_dim = math.sqrt(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """MLP output before re-normalization."""
        u, v = (self.suv(self.fc1(x)) * self.sqrt_dim).chunk(2, dim=-1)
        return self.dropout(self.fc2(u * F.silu(v)))


class NGPTBlock(Block):
    """nGPT block: normalized residual updates with per-dimension eigen learning rates (effective init 0.05).

    The ``norm``/``qk_norm`` specs are not used: justnorm is the method's only normalization. The model
    gets no final norm, a learned logit scale s_z (effective init 1) and no weight tying. Positions: RoPE
    only (GPT's default with this placement; a learned position embedding would add an un-normalized vector
    to the unit-norm stream and is refused). Projections have no bias. ``after_optimizer_step``
    re-normalizes the matrices. Option ``base_scale`` (module docstring).

    ::

        h ─┬─ justnorm ─────────── h_A ─┐
           └─ attn(h) ─ justnorm ─ h_B ─┴─ justnorm(h_A + |alpha_A| (h_B - h_A)) ─┬─ justnorm ─── h_A ─┐
                                                                                  └─ mlp ─ justnorm ─ h_M ─┴─ justnorm(h_A + |alpha_M| (h_M - h_A)) ─> out
    """

    paper = "Loshchilov et al. 2024, nGPT: Normalized Transformer with Representation Learning on the Hypersphere"

    final_norm = False
    allows_weight_tying = False
    recommended_defaults = {"weight_decay": 0.0, "warmup_steps": 0}
    positions = ("rope",)
    supports_residuals = False  # its normalized lerp on the sphere replaces x + F(x)

    def __init__(self, dim, num_heads, *, base_scale: float = BASE_SCALE, **kw):
        if not base_scale > 0:
            raise ValueError(f"ngpt placement: base_scale must be > 0, got {base_scale}")
        self.base_scale = float(base_scale)
        super().__init__(dim, num_heads, **kw)
        self.attn_alpha = ScaledParam(dim, ALPHA_INIT, self.base_scale)
        self.mlp_alpha = ScaledParam(dim, ALPHA_INIT, self.base_scale)

    def build_attention(self, *, bias, **kw):
        """Attention without biases, with s_qk and the sqrt(head_dim) softmax scale."""
        return NGPTAttention(self.dim, self.num_heads, bias=False, base_scale=self.base_scale, **kw)

    def build_mlp(self, *, act, bias, dropout):
        """The scaled SwiGLU MLP (the ``mlp`` activation option does not apply)."""
        return NGPTMLP(self.dim, self.mlp_hidden, dropout=dropout)

    def build_norms(self):
        """No norm layers."""

    def forward(self, x, pos=None):
        """Two normalized lerp updates on the unit sphere."""
        h_a = justnorm(x)
        h = justnorm(h_a + self.attn_alpha.effective().abs().to(x.dtype) * (justnorm(self.attn(x, pos)) - h_a))
        h_a = justnorm(h)
        return justnorm(h_a + self.mlp_alpha.effective().abs().to(x.dtype) * (justnorm(self.mlp(h)) - h_a))

    def logit_scale(self, num_outputs: int) -> nn.Module:
        """s_z: per-output logit scale, effective init 1, stored at ``base_scale``."""
        return ScaledParam(num_outputs, 1.0, self.base_scale)

    @staticmethod
    def init_weights(model: nn.Module) -> None:
        """Random normal directions for every matrix of the blocks, the token embedding and the head.

        The reference draws N(0, base_scale) and then normalizes: the normalization removes the std, so any
        std gives the same weights.
        """
        with torch.no_grad():
            for w in _matrices(model):
                nn.init.normal_(w)
        NGPTBlock.after_optimizer_step(model)

    @staticmethod
    def after_optimizer_step(model: nn.Module) -> None:
        """Unit L2 norm along the embedding dim: rows of tok_emb, head, qkv, fc1; columns of out_proj, fc2."""
        with torch.no_grad():
            for w, dim in _matrices(model, with_dim=True):
                w.copy_(justnorm(w.float(), dim=dim))  # copy_ casts back to w's dtype


def _matrices(model: nn.Module, with_dim: bool = False) -> list:
    """The matrices nGPT keeps on the sphere, with the dim their embedding axis is on.

    The head is never tied to the embedding (``allows_weight_tying = False``), so no matrix appears twice.
    """
    out = []
    for name in ("tok_emb", "head"):
        m = getattr(model, name, None)
        if m is not None:
            out.append((m.weight, 1))
    for blk in model.blocks:
        out += [
            (blk.attn.qkv.weight, 1),
            (blk.mlp.fc1.weight, 1),
            (blk.attn.out_proj.weight, 0),
            (blk.mlp.fc2.weight, 0),
        ]
    return out if with_dim else [w for w, _ in out]
