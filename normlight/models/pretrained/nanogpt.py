"""nanoGPT checkpoints (its train.py's ``ckpt.pt``) in and out.

A ``ckpt.pt`` is a dict read with ``torch.load(weights_only=True)``: ``model`` (the state_dict, every key
prefixed ``_orig_mod.`` when train.py ran with ``compile=True``), ``model_args`` (n_layer, n_head, n_embd,
block_size, bias, vocab_size, dropout), and for resuming ``optimizer``, ``iter_num``, ``best_val_loss``,
``config``. The tensors use GPT-2's names (:mod:`normlight.models.pretrained.gpt2_layout`) in ``nn.Linear``
orientation; model_args set the GPT::

    n_layer, n_embd, n_head, block_size, vocab_size -> depth, dim, num_heads, max_seq_len, vocab_size
    bias                                            -> bias (linears AND norms, as nanoGPT's bias flag)
    dropout                                         -> dropout
    always                                          -> mlp="gelu" (exact), norm="layernorm" eps 1e-5,
                                                       placement="pre", pos="learned", tie_weights=True

The vocabulary is taken as stored: nanoGPT pads GPT-2's 50257 tokens to 50304 (a multiple of 64), and those
47 extra rows load like the others (they only ever receive the push-down gradient of the softmax).

Out: ``export_pretrained(gpt, "ckpt.pt", format="nanogpt")`` writes ``{"model", "model_args"}``, what nanoGPT's
sample.py reads with ``init_from="resume"`` (resuming nanoGPT training would also need its optimizer state).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from normlight.errors import CheckpointError
from normlight.models.pretrained import gpt2_layout
from normlight.models.pretrained.common import existing_file, load_state, merge_settings, read_torch, strip_prefixes

EPS = 1e-5  # nanoGPT's LayerNorm calls F.layer_norm(..., 1e-5)
ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")
PREFIXES = ("_orig_mod.", "module.")


def settings(args: Mapping, source: str) -> dict:
    """normlight GPT settings equal to nanoGPT's ``model_args``."""
    missing = [k for k in ARGS if k not in args]
    if missing:
        raise CheckpointError(f"{source}: model_args lacks {', '.join(missing)}; is this a nanoGPT ckpt.pt?")
    return dict(
        vocab_size=int(args["vocab_size"]),
        max_seq_len=int(args["block_size"]),
        depth=int(args["n_layer"]),
        dim=int(args["n_embd"]),
        num_heads=int(args["n_head"]),
        mlp="gelu",
        mlp_ratio=4.0,
        dropout=float(args.get("dropout", 0.0)),
        bias=bool(args["bias"]),
        pos="learned",
        norm="layernorm",
        norm_kwargs={"eps": EPS},
        placement="pre",
    )


def load(ref: str, model_kwargs: dict, source: str) -> nn.Module:
    """A normlight GPT equal to the nanoGPT checkpoint at path ``ref``."""
    from normlight.models.gpt import GPT

    ckpt = read_torch(existing_file(ref, source), source)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model"), Mapping) or "model_args" not in ckpt:
        raise CheckpointError(f"{source}: not a nanoGPT checkpoint (a dict with 'model' and 'model_args')")
    base = settings(ckpt["model_args"], source)
    state = gpt2_layout.to_normlight(strip_prefixes(ckpt["model"], PREFIXES), source, transposed=False)
    user = dict(model_kwargs)
    tie = gpt2_layout.resolve_tie(state, True, user.pop("tie_weights", None), source)
    model = GPT(**merge_settings(base, user), tie_weights=tie)
    return load_state(model, state, source)


def export(model: nn.Module, path: Path) -> Path:
    """Write ``model`` as a nanoGPT ``ckpt.pt`` (``model`` + ``model_args``); return the file."""
    fmt = "nanogpt"
    gpt2_layout.check_exportable(model, fmt, {"gelu": "gelu"})
    if not torch.equal(model.head.weight, model.tok_emb.weight):
        raise CheckpointError(f"export {fmt}: nanoGPT always ties head and embedding; this model's differ")
    bias = gpt2_layout.has_bias(model)
    state, eps = gpt2_layout.from_normlight(model, fmt, transposed=False, with_bias=bias)
    if eps != EPS:
        raise CheckpointError(f"export {fmt}: nanoGPT's LayerNorm eps is fixed at {EPS}; this model's norms use {eps}")
    blk = model.blocks[0]
    if blk.mlp.fc1.out_features != 4 * blk.dim:
        raise CheckpointError(
            f"export {fmt}: nanoGPT's MLP is 4 x n_embd wide; this one has {blk.mlp.fc1.out_features}"
        )
    state = {f"transformer.{k}": v.cpu() for k, v in state.items() if k != "lm_head.weight"}
    state["lm_head.weight"] = state["transformer.wte.weight"]  # nanoGPT's tied pair: one tensor, two names
    model_args = dict(
        n_layer=len(model.blocks),
        n_head=blk.attn.num_heads,
        n_embd=blk.dim,
        block_size=model.max_seq_len,
        bias=bias,
        vocab_size=model.vocab_size,
        dropout=float(model.spec.get("dropout", 0.0)),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "model_args": model_args}, path)
    return path
