"""Helpers shared by the GPT and ViT stacks: build the blocks of a placement, the final norm, the init."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from normlight.blocks.factory import get_placement
from normlight.norms.factory import create_norm


def spec_value(v: Any) -> Any:
    """A plain serializable stand-in for a construction argument (classes/callables by dotted name)."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, dict):
        return {str(k): spec_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [spec_value(x) for x in v]
    target = getattr(v, "func", v)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def build_blocks(
    placement: Any, depth: int, dim: int, num_heads: int, *, placement_kwargs: dict | None, **block_kwargs: Any
) -> tuple[type, nn.ModuleList]:
    """The placement class and ``depth`` blocks of it, each told its layer index and the depth."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    cls = get_placement(placement)
    blocks = nn.ModuleList(
        cls(dim, num_heads, layer_idx=i, num_layers=depth, **block_kwargs, **(placement_kwargs or {}))
        for i in range(depth)
    )
    return cls, blocks


def final_norm(
    placement_cls: type, norm: Any, dim: int, norm_kwargs: dict | None, depth: int, num_heads: int | None = None
) -> nn.Module:
    """The norm before the head (site "final"), or Identity when the placement has none (Post-LN, ReZero, nGPT)."""
    if not placement_cls.final_norm:
        return nn.Identity()
    return create_norm(
        norm, dim, site="final", layer_idx=depth - 1, num_layers=depth, num_heads=num_heads, **(norm_kwargs or {})
    )


def depth_scaled_init(placement_cls: type, blocks: nn.ModuleList) -> bool:
    """False if the placement or any module of the blocks declares ``depth_scaled_init = False`` (LayerNorm
    Scaling: its authors use plain N(0, 0.02) for the residual writers)."""
    return placement_cls.depth_scaled_init and all(getattr(m, "depth_scaled_init", True) for m in blocks.modules())


def init_gpt2(blocks: nn.ModuleList, others: list[nn.Module], std: float = 0.02, depth_scaled: bool = True) -> None:
    """GPT-2 init: N(0, std) for every projection and embedding, zero biases, and the residual
    writers (attn.out_proj, mlp.fc2) at std/sqrt(2L) (at std with ``depth_scaled=False``). Norm parameters
    keep their plugin's init."""
    writer_std = std / math.sqrt(2 * len(blocks)) if depth_scaled else std
    for m in others:
        for sub in m.modules():
            if isinstance(sub, (nn.Linear, nn.Embedding)):
                nn.init.normal_(sub.weight, std=std)
                if getattr(sub, "bias", None) is not None:
                    nn.init.zeros_(sub.bias)
    for blk in blocks:
        for lin, s in (
            (blk.attn.qkv, std),
            (blk.mlp.fc1, std),
            (blk.attn.out_proj, writer_std),
            (blk.mlp.fc2, writer_std),
        ):
            nn.init.normal_(lin.weight, std=s)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)


def placement_init(model: nn.Module) -> None:
    """Run the placement's ``init_weights(model)`` hook if it defines one."""
    hook = getattr(model.placement_cls, "init_weights", None)
    if hook is not None:
        hook(model)


def num_params(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())


def with_norm_bias(kwargs: dict | None, bias: bool) -> dict:
    """Norm options for a model with ``bias``: ``bias=False`` also drops the norms' biases (nanoGPT's meaning:
    no bias in any linear or norm); an explicit ``bias`` in ``kwargs`` wins."""
    kwargs = dict(kwargs or {})
    if not bias:
        kwargs.setdefault("bias", False)
    return kwargs
