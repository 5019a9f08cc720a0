"""Decoder-only GPT (nanoGPT-shaped) on the shared block stack with any norm and placement.

::

    idx (B,T) ─ tok_emb [× emb_scale] [+ pos_emb (learned)] ─ dropout ─ blocks[0..L-1] ─ final norm ─ head
        [─ logit scale] ─> logits (B,T,V)
                                                                        └─ final norm + readout ─> embed(idx) (B,D)

``pos``: "learned" (added embedding) or "rope" (rotary, in attention); None = the placement's default
(``Block.positions[0]``: learned, except nGPT, which works with RoPE only). ``emb_scale=True`` multiplies the
token embedding by one learnable scalar initialised to sqrt(dim) (the DyT paper's LLaMA recipe).
``readout`` / ``readout_kwargs``: the pooling plugin ``embed`` uses for one vector per sequence ("last_token",
the default, "mean", "weighted_mean", "attn", ...); ``residual`` / ``mixer`` / ``depth_regularizer`` (each with
``*_kwargs``): residual-connection, token-mixer and depth-regularizer plugins (defaults "add", "attention", none).

Presets (parameter counts with the default pre/layernorm, learned positions, tied head; asserted in tests):

=========== ====== ===== ===== ===== ====== ==============
preset      layers dim   heads ctx   vocab  parameters
=========== ====== ===== ===== ===== ====== ==============
gpt-nano    2      64    4     64    256    120,576
gpt-tiny    6      256   4     256   256    4,870,144
gpt-small   12     768   12    1024  50257  124,439,808
gpt-medium  24     1024  16    1024  50257  354,823,168
=========== ====== ===== ===== ===== ====== ==============

Every preset uses the exact (erf) GELU (``mlp="gelu"``, as nanoGPT); GPT-2 itself was trained with the tanh
approximation, ``mlp="gelu_tanh"``, which ``normlight.models.load_pretrained("hf:...")`` sets (docs/pretrained.md).
``bias=False`` removes the biases of the linears and of the norms (nanoGPT's ``bias=False``). With tied weights,
loading a state_dict whose ``head.weight`` differs from ``tok_emb.weight`` is refused (it would silently keep only
one of them); build with ``tie_weights=False`` to load both.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from normlight.blocks.factory import get_placement
from normlight.mixers.factory import check_mixer
from normlight.models.transformer import (
    build_blocks,
    build_depth_regularizers,
    depth_scaled_init,
    early_exits,
    final_norm,
    init_gpt2,
    placement_init,
    readout,
    run_blocks,
    setup_stack,
    spec_value,
    with_norm_bias,
)
from normlight.poolings.factory import create_pooling
from normlight.poolings.factory import declared as pooling_declared
from normlight.registry import spec_label


class GPT(nn.Module):
    """Causal language model; ``pos``, ``emb_scale`` (module docstring), ``tie_weights`` (default: tie unless the
    placement forbids)."""

    family = "gpt"

    def __init__(
        self,
        *,
        name: str = "gpt",
        vocab_size: int = 256,
        max_seq_len: int = 64,
        depth: int = 2,
        dim: int = 64,
        num_heads: int = 4,
        mlp: str = "gelu",
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        bias: bool = True,
        pos: str | None = None,
        emb_scale: bool = False,
        tie_weights: bool | None = None,
        norm: Any = "layernorm",
        norm_kwargs: dict | None = None,
        placement: Any = "pre",
        placement_kwargs: dict | None = None,
        qk_norm: Any = None,
        qk_norm_kwargs: dict | None = None,
        readout: Any = "last_token",
        readout_kwargs: dict | None = None,
        residual: Any = "add",
        residual_kwargs: dict | None = None,
        mixer: Any = "attention",
        mixer_kwargs: dict | None = None,
        depth_regularizer: Any = None,
        depth_regularizer_kwargs: dict | None = None,
    ):
        super().__init__()
        placement_cls = get_placement(placement)
        pos = placement_cls.positions[0] if pos is None else pos
        if pos not in ("learned", "rope"):
            raise ValueError(f"gpt: pos must be 'learned' or 'rope', got {pos!r}")
        if pos not in placement_cls.positions:
            allowed = " or ".join(map(repr, placement_cls.positions))
            raise ValueError(
                f"gpt: placement {placement_cls.__name__} works with pos {allowed} only, got pos={pos!r} "
                f"(see its docstring); leave pos unset for its default"
            )
        check_mixer(mixer, causal=True, where=f"model {name!r} (a causal language model)")
        if pooling_declared(readout, "uses_class_token", False):
            raise ValueError(
                f"gpt: readout {spec_label(readout)} reads a class token, which model {name!r} does not have; "
                "choose last_token, mean, weighted_mean, attn, ..."
            )
        self.spec = {
            k: spec_value(v)
            for k, v in dict(
                name=name,
                vocab_size=vocab_size,
                max_seq_len=max_seq_len,
                depth=depth,
                dim=dim,
                num_heads=num_heads,
                mlp=mlp,
                mlp_ratio=mlp_ratio,
                dropout=dropout,
                bias=bias,
                pos=pos,
                emb_scale=emb_scale,
                tie_weights=tie_weights,
                norm=norm,
                norm_kwargs=norm_kwargs or {},
                placement=placement,
                placement_kwargs=placement_kwargs or {},
                qk_norm=qk_norm,
                qk_norm_kwargs=qk_norm_kwargs or {},
                readout=readout,
                readout_kwargs=readout_kwargs or {},
                residual=residual,
                residual_kwargs=residual_kwargs or {},
                mixer=mixer,
                mixer_kwargs=mixer_kwargs or {},
                depth_regularizer=depth_regularizer,
                depth_regularizer_kwargs=depth_regularizer_kwargs or {},
            ).items()
        }
        norm_kwargs, qk_norm_kwargs = with_norm_bias(norm_kwargs, bias), with_norm_bias(qk_norm_kwargs, bias)
        self.vocab_size, self.max_seq_len = vocab_size, max_seq_len
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.emb_scale = nn.Parameter(torch.full((1,), math.sqrt(dim))) if emb_scale else None
        self.pos_emb = nn.Embedding(max_seq_len, dim) if pos == "learned" else None
        self.drop = nn.Dropout(dropout)
        self.placement_cls, self.blocks = build_blocks(
            placement,
            depth,
            dim,
            num_heads,
            placement_kwargs=placement_kwargs,
            norm=norm,
            norm_kwargs=norm_kwargs,
            qk_norm=qk_norm,
            qk_norm_kwargs=qk_norm_kwargs,
            mlp=mlp,
            mlp_ratio=mlp_ratio,
            causal=True,
            dropout=dropout,
            bias=bias,
            rope=pos == "rope",
            max_seq_len=max_seq_len,
            residual=residual,
            residual_kwargs=residual_kwargs,
            mixer=mixer,
            mixer_kwargs=mixer_kwargs,
        )
        self.norm = final_norm(self.placement_cls, norm, dim, norm_kwargs, depth, num_heads)
        self.pooling = create_pooling(readout, dim, num_heads=num_heads, num_layers=depth, **(readout_kwargs or {}))
        self.depth_regularizer = build_depth_regularizers(depth_regularizer, depth_regularizer_kwargs, depth)
        setup_stack(self, self.pooling, depth_regularizer, exits_read_pooling=False)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.logit_scale = self.blocks[0].logit_scale(vocab_size)
        if tie_weights and not self.placement_cls.allows_weight_tying:
            raise ValueError(f"placement {self.placement_cls.__name__} does not allow tie_weights=True")
        init_gpt2(
            self.blocks,
            [self.tok_emb, self.pos_emb, self.head] if self.pos_emb else [self.tok_emb, self.head],
            depth_scaled=depth_scaled_init(self.placement_cls, self.blocks),
        )
        if tie_weights is None:
            tie_weights = self.placement_cls.allows_weight_tying
        if tie_weights:
            self.head.weight = self.tok_emb.weight
        self.spec["tie_weights"] = bool(tie_weights)
        self.register_load_state_dict_pre_hook(refuse_untied_state)
        placement_init(self)

    def forward(self, idx: torch.Tensor, pooled: bool = False) -> torch.Tensor:
        """Logits (B,T,V) for token ids (B,T) with T <= max_seq_len; ``pooled=True``: the readout (B,D) instead."""
        t = idx.shape[1]
        if t > self.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds max_seq_len {self.max_seq_len} of this GPT")
        x = self.tok_emb(idx)
        if self.emb_scale is not None:
            x = x * self.emb_scale.to(x.dtype)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(t, device=idx.device))
        x = self.drop(x)
        x, hidden = run_blocks(self, x)
        if pooled:
            return readout(self.norm, self.pooling, x, hidden)
        self.early_exits = early_exits(self, hidden, self.logits)
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B,T,V) from the stream (B,T,D): final norm, head [, logit scale]."""
        logits = self.head(self.norm(x))
        return logits if self.logit_scale is None else self.logit_scale(logits)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """One vector per sequence (B,D): the ``readout`` pooling of the last block's output (with the final norm)."""
        return self.forward(idx, pooled=True)


def refuse_untied_state(model: GPT, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: a tied model cannot hold a state whose head and embedding differ."""
    emb, head = state_dict.get(prefix + "tok_emb.weight"), state_dict.get(prefix + "head.weight")
    if model.head.weight is not model.tok_emb.weight or emb is None or head is None:
        return
    if emb.shape != head.shape or not torch.equal(emb, head.to(emb.device, emb.dtype)):
        raise ValueError(
            f"this GPT ties head and embedding, but the state_dict's {prefix}head.weight differs from its "
            f"{prefix}tok_emb.weight (loading would keep only one); build the model with tie_weights=False"
        )


def _preset(name: str, defaults: dict, kwargs: dict) -> GPT:
    return GPT(**{"name": name, **defaults, **kwargs})


def gpt_nano(**kwargs: Any) -> GPT:
    """Test-sized GPT: 2 layers, dim 64, 4 heads, ctx 64, vocab 256 (120,576 params). Any field overridable."""
    return _preset("gpt-nano", dict(depth=2, dim=64, num_heads=4, max_seq_len=64, vocab_size=256), kwargs)


def gpt_tiny(**kwargs: Any) -> GPT:
    """CPU-trainable GPT: 6 layers, dim 256, 4 heads, ctx 256, vocab 256 (4,870,144 params)."""
    return _preset("gpt-tiny", dict(depth=6, dim=256, num_heads=4, max_seq_len=256, vocab_size=256), kwargs)


def gpt_small(**kwargs: Any) -> GPT:
    """GPT-2 124M shape: 12 layers, dim 768, 12 heads, ctx 1024, vocab 50257 (124,439,808 params)."""
    return _preset("gpt-small", dict(depth=12, dim=768, num_heads=12, max_seq_len=1024, vocab_size=50257), kwargs)


def gpt_medium(**kwargs: Any) -> GPT:
    """GPT-2 medium shape: 24 layers, dim 1024, 16 heads, ctx 1024, vocab 50257 (354,823,168 params)."""
    return _preset("gpt-medium", dict(depth=24, dim=1024, num_heads=16, max_seq_len=1024, vocab_size=50257), kwargs)
