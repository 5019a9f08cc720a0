"""Pretrained checkpoints in and out: study norms on real pretrained models.

::

    load_pretrained("hf:openai-community/gpt2")          # or hf:<directory> with config.json + safetensors/bin
    load_pretrained("nanogpt:out/ckpt.pt")
    load_pretrained("timm:vit_small_patch16_224")         # timm's own pretrained loading
    load_pretrained("timm:resnet50:weights.safetensors")  # a local file, read by timm's loader
    load_pretrained("torchvision:resnet50")               # torchvision's DEFAULT weights (torch hub cache)
    export_pretrained(model, "out/gpt2-rms", format="hf") # back to the peer's layout: hf, nanogpt, timm, torchvision

The normlight model is built with the settings that make it equal to the source (GELU form, LayerNorm eps,
biases, tied weights, vocabulary, positions); ``model_kwargs`` override them (e.g. ``dropout=0.0``,
``num_classes=10`` for a new classifier on a vision model). The load is strict: every tensor is placed and
every shape checked, with one error naming the keys otherwise; vision sources are also checked against the
peer library's own model on a random input. The model takes the checkpoint's dtype. Nothing is unpickled:
safetensors, or ``torch.load(weights_only=True)``. One module per source; docs/pretrained.md has the tables.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from normlight.errors import CheckpointError
from normlight.models.convert import to_pre_crmsnorm, to_pre_rmsnorm

SOURCES = {  # prefix -> module (imported on use: each pulls in its own peer library)
    "hf": "hf_gpt2",
    "nanogpt": "nanogpt",
    "timm": "timm_models",
    "torchvision": "torchvision_resnet",
}
CONVERSIONS = {"rmsnorm": to_pre_rmsnorm, "crmsnorm": to_pre_crmsnorm}  # norm= on a Pre-LN source: exact conversion
FORMS = "hf:<model id or directory>, nanogpt:<ckpt.pt>, timm:<model>[:<file>], torchvision:<resnet18|resnet50>[:<weights or file>]"


def _module(kind: str):
    return importlib.import_module(f"normlight.models.pretrained.{SOURCES[kind]}")


def load_pretrained(source: str, **model_kwargs) -> nn.Module:
    """A normlight model equal to the pretrained checkpoint ``source`` (``<kind>:<ref>``, see the module doc).

    ``norm="rmsnorm"`` or ``"crmsnorm"`` for a Pre-LN GPT or ViT source loads it and converts it exactly
    (:mod:`normlight.models.convert`, Jiang et al. 2023): the same logits with Pre-(C)RMSNorm.
    """
    kind, sep, ref = str(source).partition(":")
    if not sep or kind not in SOURCES or not ref:
        raise CheckpointError(f"unknown pretrained source {source!r}; use {FORMS}")
    target = model_kwargs.get("norm")
    if target in CONVERSIONS:
        if model_kwargs.get("norm_kwargs"):
            raise CheckpointError(
                f"{source}: norm={target!r} converts the pretrained LayerNorms exactly (eps of the LayerNorm, no "
                "affine), so it takes no norm_kwargs; drop them"
            )
        kwargs = {k: v for k, v in model_kwargs.items() if k not in ("norm", "norm_kwargs")}
        model = _module(kind).load(ref, kwargs, source)
        try:
            model = CONVERSIONS[target](model)
        except ValueError as exc:
            raise CheckpointError(f"{source}: norm={target!r} needs an exact conversion, which fails: {exc}") from exc
    else:
        model = _module(kind).load(ref, dict(model_kwargs), source)
    model.spec = {**getattr(model, "spec", {}), "init_from": source}
    return model.train()


def export_pretrained(model: nn.Module, path: str | Path, format: str) -> Path:
    """Write ``model`` in a peer's layout (``format``: hf, nanogpt, timm, torchvision); return what was written.

    ``hf`` and ``timm`` write a directory (config.json + model.safetensors), ``nanogpt`` a ``ckpt.pt`` and
    ``torchvision`` a state_dict file. A model the layout cannot hold exactly is refused, naming the part.
    """
    if format not in SOURCES:
        raise CheckpointError(f"unknown export format {format!r}; choose from {', '.join(SOURCES)}")
    return _module(format).export(model, Path(path).expanduser())


__all__ = ["SOURCES", "export_pretrained", "load_pretrained"]
