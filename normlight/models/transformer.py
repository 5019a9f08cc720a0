"""Helpers shared by the GPT and ViT stacks: build the blocks of a placement, the final norm, the init, and
run the stack with its model-level plugin hooks (depth regularizers, between-block residuals, readout)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from normlight.blocks.factory import get_placement
from normlight.depth.factory import create_depth_regularizer
from normlight.errors import PluginOptionError
from normlight.norms.factory import create_norm
from normlight.registry import spec_label


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
    link_residuals(blocks)
    return cls, blocks


def link_residuals(blocks: nn.ModuleList) -> None:
    """Call ``link_layers(modules)`` of every residual class that defines it, with its modules in depth order."""
    for site in ("attn", "mlp", "depth", "value"):
        by_class: dict[type, list] = {}
        for blk in blocks:
            m = blk.residual_modules()[site] if hasattr(blk, "residual_modules") else None
            if m is not None and hasattr(type(m), "link_layers"):
                by_class.setdefault(type(m), []).append(m)
        for cls, modules in by_class.items():
            cls.link_layers(modules)


def build_depth_regularizers(spec, kwargs: dict | None, depth: int) -> nn.ModuleList | None:
    """One depth regularizer per block (None when ``spec`` is None: off)."""
    if spec is None:
        return None
    return nn.ModuleList(
        create_depth_regularizer(spec, layer_idx=i, num_layers=depth, **(kwargs or {})) for i in range(depth)
    )


def setup_stack(model: nn.Module, pooling: nn.Module, depth_spec, exits_read_pooling: bool) -> None:
    """What ``run_blocks`` needs: keep the block outputs (for a pooling reading every layer or early exits),
    the LayerSkip-style early-exit weights (None when no layer before the last has one).
    ``exits_read_pooling``: the model's early exits go through its pooling (a classifier, not an LM)."""
    regs = model.depth_regularizer
    weights = [float(getattr(r, "exit_weight", 0.0)) for r in regs] if regs is not None else []
    model.exit_weights = weights if any(w > 0 for w in weights[:-1]) else None
    reads_all = bool(getattr(pooling, "needs_hidden_states", False))
    if model.exit_weights is not None and reads_all and exits_read_pooling:
        raise PluginOptionError(
            f"depth regularizer {spec_label(depth_spec)} asks for early exits, but the pooling reads every "
            "layer's output and so cannot read one early exit; set early_exit_scale 0 or choose another pooling"
        )
    model.keep_hidden = reads_all or model.exit_weights is not None
    model.early_exits = None


def run_blocks(model: nn.Module, x: torch.Tensor, pes: list | None = None) -> tuple[torch.Tensor, list]:
    """``x = block(x)`` for every block, plus the plugin hooks when present: the depth regularizer around each
    block, the between-block (``depth``) residual after it (DenseFormer). Returns the stream and, when the
    model keeps them, every block's output (else an empty list). ``pes``: per-block positions (LaPE)."""
    regs = model.depth_regularizer
    history = [x] if model.blocks[0].depth_residual is not None else None
    hidden = []
    for i, block in enumerate(model.blocks):
        h = block(x) if pes is None else block(x, pes[i])
        if regs is not None:
            h = regs[i](x, h)
        if history is not None:
            history.append(h)
            h = block.depth_residual(history)
        x = h
        if model.keep_hidden:
            hidden.append(x)
    return x, hidden


def readout(norm: nn.Module, pooling: nn.Module, x: torch.Tensor, hidden: list | None = None) -> torch.Tensor:
    """One vector per sample: final norm then pooling (``norm_position = "pre"``), or pooling then norm."""
    kw = {"hidden_states": hidden} if getattr(pooling, "needs_hidden_states", False) else {}
    if getattr(pooling, "norm_position", "pre") == "pre":
        return pooling(norm(x), **kw)
    return norm(pooling(x, **kw))


def early_exits(model: nn.Module, hidden: list, to_logits) -> tuple | None:
    """While training with early-exit weights: (final layer's weight, [(w_l, logits of layer l's output)])."""
    if not model.training or model.exit_weights is None:
        return None
    w = model.exit_weights
    return w[-1], [(wl, to_logits(h)) for wl, h in zip(w[:-1], hidden[:-1]) if wl > 0]


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
            (getattr(blk.attn, "qkv", None), std),  # a token mixer other than attention may have neither
            (blk.mlp.fc1, std),
            (getattr(blk.attn, "out_proj", None), writer_std),
            (blk.mlp.fc2, writer_std),
        ):
            if lin is None:
                continue
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
