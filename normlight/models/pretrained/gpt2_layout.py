"""GPT-2's parameter names (OpenAI / Hugging Face and nanoGPT share them) <-> normlight's GPT.

=============================== ============================ ===========================================
GPT-2 name                      normlight GPT                note
=============================== ============================ ===========================================
wte.weight                      tok_emb.weight
wpe.weight                      pos_emb.weight               learned positions (``pos="learned"``)
h.{i}.ln_1.{weight,bias}        blocks.{i}.norm1.*           placement ``pre``
h.{i}.attn.c_attn.{weight,bias} blocks.{i}.attn.qkv.*        rows [q; k; v]; HF's Conv1D stores W^T
h.{i}.attn.c_proj.*             blocks.{i}.attn.out_proj.*   HF: transposed
h.{i}.ln_2.*                    blocks.{i}.norm2.*
h.{i}.mlp.c_fc.*                blocks.{i}.mlp.fc1.*         HF: transposed
h.{i}.mlp.c_proj.*              blocks.{i}.mlp.fc2.*         HF: transposed
ln_f.*                          norm.*
lm_head.weight                  head.weight                  absent (HF safetensors) or == wte when tied
h.{i}.attn.bias, .masked_bias   (dropped)                    causal-mask buffers, not weights
=============================== ============================ ===========================================

Hugging Face's ``GPT2LMHeadModel`` prefixes the body with ``transformer.``; both forms are read.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from normlight.blocks.factory import get_placement
from normlight.errors import CheckpointError
from normlight.models.pretrained.common import short_list
from normlight.models.pretrained.norm_view import Writers, layernorm_params, one_eps

PARTS = {
    "ln_1": "norm1",
    "attn.c_attn": "attn.qkv",
    "attn.c_proj": "attn.out_proj",
    "ln_2": "norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
TOP = {"wte": "tok_emb", "wpe": "pos_emb", "ln_f": "norm", "lm_head": "head"}
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
BLOCK_KEY = re.compile(r"h\.(\d+)\.(" + "|".join(re.escape(p) for p in PARTS) + r")\.(weight|bias)")
TOP_KEY = re.compile(r"(" + "|".join(TOP) + r")\.(weight|bias)")
MASK_KEY = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
LAYOUT = "wte, wpe, h.<i>.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_f, lm_head"


def depth_of(state: dict[str, torch.Tensor]) -> int:
    """Number of blocks ``h.<i>`` in a GPT-2-named state."""
    found = {int(m.group(1)) for k in state if (m := re.match(r"(?:transformer\.)?h\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def to_normlight(state: dict[str, torch.Tensor], source: str, transposed: bool) -> dict[str, torch.Tensor]:
    """GPT-2-named tensors under normlight's names; ``transposed``: the four projections are HF Conv1D (in, out)."""
    out, unmapped = {}, []
    for key, t in state.items():
        name = key.removeprefix("transformer.")
        if MASK_KEY.fullmatch(name):
            continue
        if m := BLOCK_KEY.fullmatch(name):
            i, part, kind = m.groups()
            if transposed and kind == "weight" and part in CONV1D:
                t = t.t()
            out[f"blocks.{i}.{PARTS[part]}.{kind}"] = t.contiguous()
        elif m := TOP_KEY.fullmatch(name):
            out[f"{TOP[m.group(1)]}.{m.group(2)}"] = t
        else:
            unmapped.append(key)
    if unmapped:
        raise CheckpointError(
            f"{source}: {len(unmapped)} checkpoint tensors have no counterpart in normlight's GPT: "
            f"{short_list(unmapped)} (the GPT-2 layout it maps is {LAYOUT})"
        )
    return out


def resolve_tie(state: dict[str, torch.Tensor], source_ties: bool, tie: bool | None, source: str) -> bool:
    """Fill ``head.weight`` for the model to build; return whether it ties head and embedding.

    ``tie`` is the user's ``tie_weights`` (None: as the source). A checkpoint whose head differs from its
    embedding is refused for a tied model: loading it would silently keep only one of them.
    """
    emb, head = state.get("tok_emb.weight"), state.get("head.weight")
    want = source_ties if tie is None else bool(tie)
    if emb is None:
        return want  # the strict load names the missing embedding
    if want:
        if head is not None and (head.shape != emb.shape or not torch.equal(head, emb)):
            raise CheckpointError(
                f"{source}: the checkpoint's lm_head.weight differs from its wte.weight, so it cannot load into "
                "a model that ties them (one would silently overwrite the other); pass tie_weights=False to load "
                "both, untied"
            )
        state["head.weight"] = emb
    elif head is None:
        state["head.weight"] = emb.clone()  # untying a tied checkpoint: the head starts as a copy
    return want


def check_exportable(model: nn.Module, fmt: str, activations: dict[str, str]) -> None:
    """Refuse, naming the part, a GPT that the GPT-2 layout cannot hold exactly."""
    if getattr(model, "family", None) != "gpt":
        raise CheckpointError(f"export {fmt}: needs a normlight GPT, got {type(model).__name__}")
    if model.placement_cls is not get_placement("pre"):
        raise CheckpointError(f"export {fmt}: needs placement 'pre' (GPT-2's), got {model.placement_cls.__name__}")
    if model.pos_emb is None:
        raise CheckpointError(f"export {fmt}: needs learned positions (pos='learned'); this GPT uses RoPE")
    if model.logit_scale is not None:
        raise CheckpointError(f"export {fmt}: the model scales its logits ({type(model.logit_scale).__name__})")
    for i, blk in enumerate(model.blocks):
        attn, mlp = blk.attn, blk.mlp
        extras = [
            n for n in ("q_norm", "k_norm", "v_norm", "inner_norm") if not isinstance(getattr(attn, n), nn.Identity)
        ]
        extras += ["mid_norm"] if not isinstance(mlp.mid_norm, nn.Identity) else []
        extras += ["head_scale"] if attn.head_scale is not None else []
        extras += ["attention scale"] if attn.scale is not None else []
        if extras:
            raise CheckpointError(f"export {fmt}: blocks[{i}] has {', '.join(extras)}, which the GPT-2 layout lacks")
        if mlp.act not in activations:
            raise CheckpointError(
                f"export {fmt}: mlp={mlp.act!r} has no {fmt} form; it takes {', '.join(sorted(activations))}"
            )


def stream_writers(model: nn.Module) -> Writers:
    """Everything that writes into a GPT's residual stream, with the dim that spans the model width."""
    out: Writers = [("tok_emb.weight", model.tok_emb.weight, -1), ("pos_emb.weight", model.pos_emb.weight, -1)]
    for i, blk in enumerate(model.blocks):
        for name, lin in (("attn.out_proj", blk.attn.out_proj), ("mlp.fc2", blk.mlp.fc2)):
            out.append((f"blocks.{i}.{name}.weight", lin.weight, 0))
            if lin.bias is not None:
                out.append((f"blocks.{i}.{name}.bias", lin.bias, 0))
    return out


def from_normlight(
    model: nn.Module, fmt: str, transposed: bool, with_bias: bool
) -> tuple[dict[str, torch.Tensor], float]:
    """GPT-2-named tensors of a (checked) pre-norm GPT and the norms' one eps; absent biases as zeros
    when ``with_bias``. ``lm_head.weight`` is always included (the caller drops it when tied)."""
    writers = lambda: stream_writers(model)
    state: dict[str, torch.Tensor] = {"wte.weight": model.tok_emb.weight, "wpe.weight": model.pos_emb.weight}
    eps = []

    def put_norm(name: str, norm: nn.Module, where: str) -> None:
        """The norm's LayerNorm form under ``name``."""
        w, b, e = layernorm_params(norm, where, fmt, writers, model.tok_emb.weight)
        eps.append(e)
        state[f"{name}.weight"] = w
        if with_bias:
            state[f"{name}.bias"] = b
        elif b.count_nonzero():
            raise CheckpointError(f"export {fmt}: {where} has a bias, but the exported layout has none")

    def put_linear(name: str, lin: nn.Linear, where: str) -> None:
        """The linear under ``name`` (transposed for HF's Conv1D)."""
        state[f"{name}.weight"] = lin.weight.t() if transposed else lin.weight
        if with_bias:
            state[f"{name}.bias"] = lin.bias if lin.bias is not None else torch.zeros_like(lin.weight[:, 0])
        elif lin.bias is not None and lin.bias.count_nonzero():
            raise CheckpointError(f"export {fmt}: {where} has a bias, but the exported layout has none")

    for i, blk in enumerate(model.blocks):
        put_norm(f"h.{i}.ln_1", blk.norm1, f"blocks[{i}].norm1")
        put_linear(f"h.{i}.attn.c_attn", blk.attn.qkv, f"blocks[{i}].attn.qkv")
        put_linear(f"h.{i}.attn.c_proj", blk.attn.out_proj, f"blocks[{i}].attn.out_proj")
        put_norm(f"h.{i}.ln_2", blk.norm2, f"blocks[{i}].norm2")
        put_linear(f"h.{i}.mlp.c_fc", blk.mlp.fc1, f"blocks[{i}].mlp.fc1")
        put_linear(f"h.{i}.mlp.c_proj", blk.mlp.fc2, f"blocks[{i}].mlp.fc2")
    put_norm("ln_f", model.norm, "the final norm")
    state["lm_head.weight"] = model.head.weight
    if model.head.bias is not None and model.head.bias.count_nonzero():
        shift = head_bias_as_shift(model.head, fmt)
        state["ln_f.bias"] = state.get("ln_f.bias", torch.zeros_like(shift)) + shift.to(state["ln_f.weight"].dtype)
    dtype = model.tok_emb.weight.dtype
    return {k: v.detach().to(dtype).contiguous() for k, v in state.items()}, one_eps(eps, fmt)


def head_bias_as_shift(head: nn.Linear, fmt: str) -> torch.Tensor:
    """The shift ``s`` of the final norm's output with ``W s == head.bias``: GPT-2's lm_head has no bias, and
    a Pre-RMSNorm conversion folds ln_f's bias into the head as ``W beta``, which this recovers exactly."""
    w, b = head.weight.detach().double(), head.bias.detach().double()
    shift = torch.linalg.lstsq(w, b.unsqueeze(1)).solution.squeeze(1)
    residual = float((w @ shift - b).abs().max())
    if residual > 1e3 * torch.finfo(head.weight.dtype).eps * (1.0 + float(b.abs().max())):
        raise CheckpointError(
            f"export {fmt}: the head has a bias (largest {float(b.abs().max()):.3g}) that no shift of the final "
            f"norm reproduces (residual {residual:.3g}); the layout's lm_head has no bias"
        )
    return shift


def has_bias(model: nn.Module) -> bool:
    """True if any linear or norm of the GPT has a bias parameter."""
    return any(n.rsplit(".", 1)[-1] == "bias" for n, _ in model.named_parameters())
