"""Hugging Face GPT-2 checkpoints in and out, without importing ``transformers``.

In: ``hf:<model id>`` (resolved through the Hub client; with ``HF_HUB_OFFLINE=1`` only models already in the
local Hub cache load) or ``hf:<directory>`` holding ``config.json`` and ``model.safetensors`` (or a sharded
``model.safetensors.index.json``, or ``pytorch_model.bin``, read with ``torch.load(weights_only=True)``).
The tensors map as in :mod:`normlight.models.pretrained.gpt2_layout`; config.json sets the GPT::

    n_layer, n_embd, n_head, n_positions, vocab_size -> depth, dim, num_heads, max_seq_len, vocab_size
    n_inner (null: 4 * n_embd)                       -> mlp_ratio
    activation_function gelu_new, gelu_pytorch_tanh  -> mlp="gelu_tanh"   (gelu -> "gelu", relu -> "relu")
    layer_norm_epsilon                               -> norm="layernorm", norm_kwargs={"eps": ...}
    tie_word_embeddings (default true)               -> tie_weights
    resid_pdrop                                      -> dropout (normlight has one rate for all three)
    always                                           -> placement="pre", pos="learned", bias=True

Refused with a clear error: ``scale_attn_by_inverse_layer_idx``, ``scale_attn_weights=false`` and
``add_cross_attention`` (parts normlight's GPT does not have).

Out: ``export_pretrained(gpt, directory, format="hf")`` writes config.json + model.safetensors (tied head
omitted, as ``save_pretrained`` does) that ``GPT2LMHeadModel.from_pretrained(directory)`` loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from normlight.errors import CheckpointError
from normlight.models.pretrained import gpt2_layout
from normlight.models.pretrained.common import (
    load_state,
    merge_settings,
    read_safetensors,
    read_weights,
)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
EXPORT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def locate(ref: str, source: str) -> Path:
    """The directory holding config.json and the weights: ``ref`` itself, or its Hub snapshot."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise CheckpointError(f"{source}: {ref!r} is not a directory holding config.json and the weights")
    return hub_snapshot(ref, source)


def hub_snapshot(repo_id: str, source: str) -> Path:
    """Fetch (or, offline, find in the cache) config.json and the first weight file the repo has."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        config = Path(hf_hub_download(repo_id, "config.json"))
    except (OSError, ValueError) as exc:  # not cached offline, unknown repo, network, malformed id
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"{source}: {repo_id!r} is neither a local directory nor a model the Hugging Face Hub client can "
            f"provide ({type(exc).__name__}: {first}); offline (HF_HUB_OFFLINE=1) only models already in the "
            "Hub cache load"
        ) from exc
    for name in WEIGHT_FILES:
        try:
            found = Path(hf_hub_download(repo_id, name))
        except EntryNotFoundError:
            continue
        if name.endswith(".index.json"):
            for shard in sorted(set(json.loads(found.read_text())["weight_map"].values())):
                hf_hub_download(repo_id, shard)
        return config.parent
    raise CheckpointError(f"{source}: the Hub repo {repo_id!r} has none of {', '.join(WEIGHT_FILES)} (or not cached)")


def read_dir(directory: Path, source: str) -> dict:
    """The tensors of a Hugging Face model directory (safetensors first, as transformers prefers)."""
    single, index, binary = (directory / n for n in WEIGHT_FILES)
    if single.is_file():
        return read_safetensors(single, source)
    if index.is_file():
        state = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            state.update(read_safetensors(directory / shard, source))
        return state
    if binary.is_file():
        return read_weights(binary, source)
    raise CheckpointError(f"{source}: {directory} has none of {', '.join(WEIGHT_FILES)}")


def settings(config: dict, source: str) -> tuple[dict, bool]:
    """normlight GPT settings equal to a GPT-2 config.json, and whether it ties head and embedding."""
    if config.get("model_type") != "gpt2":
        raise CheckpointError(
            f"{source}: config.json has model_type {config.get('model_type')!r}; only GPT-2 ('gpt2') maps to "
            "normlight's GPT"
        )
    unsupported = [k for k in ("scale_attn_by_inverse_layer_idx", "add_cross_attention") if config.get(k)] + (
        ["scale_attn_weights=false"] if config.get("scale_attn_weights") is False else []
    )
    if unsupported:
        raise CheckpointError(f"{source}: config.json sets {', '.join(unsupported)}, which normlight's GPT lacks")
    act = config.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise CheckpointError(
            f"{source}: activation_function {act!r} has no normlight MLP; supported: {', '.join(ACTIVATIONS)}"
        )
    dim = config["n_embd"]
    return (
        dict(
            vocab_size=config["vocab_size"],
            max_seq_len=config["n_positions"],
            depth=config["n_layer"],
            dim=dim,
            num_heads=config["n_head"],
            mlp=ACTIVATIONS[act],
            mlp_ratio=(config.get("n_inner") or 4 * dim) / dim,
            dropout=config.get("resid_pdrop", 0.1),
            bias=True,
            pos="learned",
            norm="layernorm",
            norm_kwargs={"eps": config.get("layer_norm_epsilon", 1e-5)},
            placement="pre",
        ),
        bool(config.get("tie_word_embeddings", True)),
    )


def load(ref: str, model_kwargs: dict, source: str) -> nn.Module:
    """A normlight GPT equal to the GPT-2 checkpoint ``ref`` (Hub id or directory)."""
    from normlight.models.gpt import GPT

    directory = locate(ref, source)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{source}: {directory} has no config.json")
    base, ties = settings(json.loads(config_file.read_text()), source)
    state = gpt2_layout.to_normlight(read_dir(directory, source), source, transposed=True)
    user = dict(model_kwargs)
    tie = gpt2_layout.resolve_tie(state, ties, user.pop("tie_weights", None), source)
    model = GPT(**merge_settings(base, user), tie_weights=tie)
    return load_state(model, state, source)


def export(model: nn.Module, path: Path) -> Path:
    """Write ``model`` as a GPT-2 directory (config.json + model.safetensors); return the directory."""
    from safetensors.torch import save_file

    fmt = "hf"
    gpt2_layout.check_exportable(model, fmt, EXPORT_ACTIVATIONS)
    state, eps = gpt2_layout.from_normlight(model, fmt, transposed=True, with_bias=True)
    tied = model.head.weight is model.tok_emb.weight
    if tied:
        del state["lm_head.weight"]  # save_pretrained omits the tied copy; from_pretrained re-ties it
    blk = model.blocks[0]
    config: dict[str, Any] = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": model.vocab_size,
        "n_positions": model.max_seq_len,
        "n_embd": model.tok_emb.weight.shape[1],
        "n_layer": len(model.blocks),
        "n_head": blk.attn.num_heads,
        "n_inner": blk.mlp.fc2.in_features,
        "activation_function": EXPORT_ACTIVATIONS[blk.mlp.act],
        "layer_norm_epsilon": eps,
        "tie_word_embeddings": tied,
        "resid_pdrop": model.spec.get("dropout", 0.0),
        "embd_pdrop": model.spec.get("dropout", 0.0),
        "attn_pdrop": model.spec.get("dropout", 0.0),
        "scale_attn_weights": True,
        "initializer_range": 0.02,
        "dtype": str(state["wte.weight"].dtype).removeprefix("torch."),
    }
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {f"transformer.{k}" if not k.startswith("lm_head") else k: v.cpu() for k, v in state.items()},
        str(path / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path
