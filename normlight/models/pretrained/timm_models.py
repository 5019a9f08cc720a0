"""timm ViT and ResNet checkpoints in and out, loaded by timm itself and mapped onto normlight's models.

In (``ref`` after ``timm:``):
    <name>                  timm's own ``create_model(name, pretrained=True)`` (its Hub cache; offline, with
                            HF_HUB_OFFLINE=1, only weights already cached)
    <name>:<file>           a local state_dict, ``.safetensors`` or timm training checkpoint, read by timm's own
                            loader (``weights_only=True``; EMA weights first, wrapper prefixes removed)
    local-dir:<directory>   a timm model directory (config.json + weights), e.g. one ``export_pretrained`` wrote
    hf-hub:<repo id>        a timm model on the Hub
The model options go to ``timm.create_model`` (except normlight's norm / placement options, which must agree with
the model derived from timm's; the architecture: ``img_size``, ``patch_size``, ``depth``,
``num_classes``, ...); timm adapts the checkpoint as for its own models (a fresh classifier for another
``num_classes``, a resampled position embedding for another ``img_size``). The normlight model is then built
from the timm model's architecture, loaded strictly, and its logits are checked against timm's on a random
input (a part normlight lacks shows there even when every weight found a place).

ViT (``VisionTransformer`` -> normlight ``ViT``, placement pre, ``pool="cls"``):
    cls_token, pos_embed, patch_embed.proj -> cls_token, pos_emb, patch_embed.proj
    blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2} -> blocks.i.{norm1, attn.qkv, attn.out_proj, norm2,
    mlp.fc1, mlp.fc2};  norm, head -> norm, head
    settings: img_size, patch_size, in_chans, num_classes, depth, dim (embed_dim), num_heads, mlp_ratio, bias
    (qkv_bias), mlp "gelu" (or "gelu_tanh"), norm "layernorm" with the model's own eps (1e-6 in timm's ViTs)
    refused: global_pool other than "token", register tokens, no_embed_class, pre_norm, fc_norm, LayerScale,
    qk-norm, a patch-embedding norm, non-square images or patches
ResNet (``ResNet`` -> normlight ``resnet18`` / ``resnet50``, norm "batchnorm"): torchvision's names, unchanged;
    basic blocks [2, 2, 2, 2] -> resnet18, bottlenecks [3, 4, 6, 3] -> resnet50; the BatchNorm eps from the model.

Out (``format="timm"``): a directory with config.json + model.safetensors that
``timm.create_model("local-dir:<directory>", pretrained=True)`` loads: a normlight pre-LayerNorm ViT with a class
token (LayerNorm eps 1e-6, timm's ViT norm) or a normlight resnet18 / resnet50. The export is loaded into the
timm model and its logits compared before anything is written.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from normlight.errors import CheckpointError
from normlight.models.pretrained.common import (
    CNN_SIZE,
    check_same_outputs,
    example_images,
    existing_file,
    floating_dtype,
    load_state,
)
from normlight.models.pretrained.norm_view import Writers, layernorm_params, one_eps

SOURCES = ("hf-hub:", "local-dir:")
# normlight options a task passes along (e.g. from a config): checked against the derived model, not given to timm
NORMLIGHT_OPTIONS = ("norm", "norm_kwargs", "placement", "placement_kwargs", "qk_norm")
RESNETS = {("BasicBlock", (2, 2, 2, 2)): "resnet18", ("Bottleneck", (3, 4, 6, 3)): "resnet50"}
VIT_EPS = 1e-6  # timm.layers.LayerNorm's default, what every timm VisionTransformer uses


def split_ref(ref: str) -> tuple[str, str | None]:
    """``(model name, file or None)``; ``hf-hub:...`` and ``local-dir:...`` names carry their own weights."""
    if ref.startswith(SOURCES):
        return ref, None
    name, _, file = ref.partition(":")
    return name, file or None


def build_peer(name: str, file: str | None, timm_kw: dict, source: str) -> nn.Module:
    """The timm model with its pretrained weights, loaded by timm."""
    import timm

    if not name.startswith(SOURCES) and not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise CheckpointError(f"{source}: unknown timm model {name!r}{hint}")
    kwargs: dict[str, Any] = dict(timm_kw)
    try:
        if file is not None:
            state = timm.models.load_state_dict(str(existing_file(file, source)))
            kwargs["pretrained_cfg_overlay"] = file_cfg(timm, name, state)
            kwargs["dtype"] = floating_dtype(state)
        return timm.create_model(name, pretrained=True, **kwargs)
    except CheckpointError:
        raise
    except (RuntimeError, OSError, ValueError, KeyError, AssertionError) as exc:
        first = " ".join(str(exc).split())[:400] or type(exc).__name__
        where = f"from {file}" if file else "(offline, HF_HUB_OFFLINE=1, only weights already in the cache load)"
        raise CheckpointError(f"{source}: timm could not load {name!r} {where}: {type(exc).__name__}: {first}") from exc


def file_cfg(timm, name: str, state: dict) -> dict:
    """timm's pretrained-config overlay for a state read from a file: the state itself, and the class count
    and input channels the file holds (so timm re-initializes the classifier or adapts the stem only when the
    requested ``num_classes`` / ``in_chans`` differ from the FILE's, not from the default checkpoint's)."""
    cfg = timm.create_model(name, pretrained=False, device="meta").pretrained_cfg
    out = {"state_dict": state, "source": ""}
    head, stem = f"{cfg.get('classifier')}.weight", f"{cfg.get('first_conv')}.weight"
    if head in state:
        out["num_classes"] = int(state[head].shape[0])
    if stem in state and cfg.get("input_size"):
        out["input_size"] = (int(state[stem].shape[1]), *cfg["input_size"][1:])
    return out


def load(ref: str, model_kwargs: dict, source: str) -> nn.Module:
    """A normlight ViT or ResNet equal to the timm model ``ref`` with its pretrained weights."""
    from timm.models.resnet import ResNet
    from timm.models.vision_transformer import VisionTransformer

    name, file = split_ref(ref)
    timm_kw = {k: v for k, v in model_kwargs.items() if k not in NORMLIGHT_OPTIONS}
    peer = build_peer(name, file, timm_kw, source)
    if type(peer) is VisionTransformer:
        model, state, x = vit_from_timm(peer, source)
    elif type(peer) is ResNet:
        model, state, x = resnet_from_timm(peer, source)
    else:
        raise CheckpointError(
            f"{source}: {type(peer).__name__} has no normlight counterpart; timm's VisionTransformer and ResNet "
            f"(resnet18/50) map (any timm model trains with its own weights as create_model('timm:{name}'))"
        )
    chosen = {k: model_kwargs[k] for k in NORMLIGHT_OPTIONS if model_kwargs.get(k) not in (None, {})}
    differ = {k: v for k, v in chosen.items() if model.spec.get(k) != v}
    if differ:
        derived = {k: model.spec.get(k) for k in differ}
        raise CheckpointError(
            f"{source}: the timm model fixes {derived}; {differ} would not hold its weights (norm='rmsnorm' "
            "converts a ViT exactly; convert or swap norms after loading otherwise)"
        )
    load_state(model, state, source)
    check_same_outputs(peer, model, x, source)
    return model


# ---------------------------------------------------------------------------------------------- ViT
def vit_refusals(peer: nn.Module) -> list[str]:
    """The parts of a timm VisionTransformer that normlight's ViT does not have."""
    from timm.layers import Mlp
    from timm.models.vision_transformer import Attention, Block

    out = []
    if peer.global_pool != "token":
        out.append(f"global_pool={peer.global_pool!r} (normlight pools the class token)")
    if not peer.has_class_token or peer.num_prefix_tokens != 1:
        out.append("register tokens or no class token")
    if peer.no_embed_class or peer.pos_embed is None or peer.dynamic_img_size:
        out.append("a position embedding other than a learned table over class + patch tokens")
    out += [f"{n}" for n in ("norm_pre", "fc_norm") if not isinstance(getattr(peer, n), nn.Identity)]
    if getattr(peer, "attn_pool", None) is not None:
        out.append("attention pooling")
    pe = peer.patch_embed
    if not isinstance(getattr(pe, "norm", nn.Identity()), nn.Identity) or not isinstance(pe.proj, nn.Conv2d):
        out.append("a patch embedding other than a plain conv")
    if pe.img_size[0] != pe.img_size[1] or pe.patch_size[0] != pe.patch_size[1]:
        out.append("non-square images or patches")
    if not isinstance(peer.head, nn.Linear):
        out.append("no classifier (num_classes=0)")
    for i, b in enumerate(peer.blocks):
        parts = [type(b) is Block, type(b.attn) is Attention, type(b.mlp) is Mlp]
        extras = [b.ls1, b.ls2, b.attn.q_norm, b.attn.k_norm, getattr(b.attn, "norm", nn.Identity()), b.mlp.norm]
        if not all(parts) or not all(isinstance(m, nn.Identity) for m in extras):
            out.append(f"blocks.{i} is not a plain pre-norm block (LayerScale, qk-norm or another block type)")
            break
        if not isinstance(b.mlp.act, nn.GELU):
            out.append(f"blocks.{i} uses {type(b.mlp.act).__name__}, not GELU")
            break
    return out


def vit_from_timm(peer: nn.Module, source: str) -> tuple[nn.Module, dict, torch.Tensor]:
    """The normlight ViT for a timm VisionTransformer, its state under normlight names, an example input."""
    from normlight.models.vit import ViT

    refused = vit_refusals(peer)
    if refused:
        raise CheckpointError(f"{source}: this timm ViT has parts normlight's ViT lacks: {'; '.join(refused)}")
    norms = [m for b in peer.blocks for m in (b.norm1, b.norm2)] + [peer.norm]
    eps = {float(m.eps) for m in norms}
    if len(eps) != 1 or not all(isinstance(m, nn.LayerNorm) for m in norms):
        raise CheckpointError(f"{source}: the ViT's norms must all be LayerNorms with one eps, got {sorted(eps)}")
    b0, dim = peer.blocks[0], peer.embed_dim
    settings = dict(
        img_size=peer.patch_embed.img_size[0],
        patch_size=peer.patch_embed.patch_size[0],
        in_chans=peer.patch_embed.proj.in_channels,
        num_classes=peer.num_classes,
        depth=len(peer.blocks),
        dim=dim,
        num_heads=b0.attn.num_heads,
        mlp="gelu_tanh" if b0.mlp.act.approximate == "tanh" else "gelu",
        mlp_ratio=b0.mlp.fc1.out_features / dim,
        bias=b0.attn.qkv.bias is not None,
        pool="cls",
        norm="layernorm",
        norm_kwargs={"eps": eps.pop()},
        placement="pre",
    )
    model = ViT(**settings)
    state = {vit_name(k): v for k, v in peer.state_dict().items()}
    x = example_images(model.in_chans, model.img_size, floating_dtype(state))
    return model, state, x


def vit_name(timm_key: str) -> str:
    """timm ViT key -> normlight ViT key (two renames; everything else is named alike)."""
    return "pos_emb" if timm_key == "pos_embed" else timm_key.replace(".attn.proj.", ".attn.out_proj.")


def timm_vit_name(key: str) -> str:
    """normlight ViT key -> timm ViT key."""
    return "pos_embed" if key == "pos_emb" else key.replace(".attn.out_proj.", ".attn.proj.")


# ---------------------------------------------------------------------------------------------- ResNet
def resnet_from_timm(peer: nn.Module, source: str) -> tuple[nn.Module, dict, torch.Tensor]:
    """normlight resnet18/50 for a timm ResNet of the same layout, its state, an example input."""
    from normlight.models.factory import create_model

    stages = tuple(len(getattr(peer, f"layer{i}")) for i in range(1, 5))
    kind = type(peer.layer1[0]).__name__
    preset = RESNETS.get((kind, stages))
    plain = (
        isinstance(peer.conv1, nn.Conv2d)
        and peer.conv1.kernel_size == (7, 7)
        and all(
            b.conv2.groups == 1 and isinstance(b.aa, nn.Identity)
            for s in range(1, 5)
            for b in getattr(peer, f"layer{s}")
        )
    )
    if preset is None or not plain:
        raise CheckpointError(
            f"{source}: only timm's plain resnet18 (BasicBlock x [2, 2, 2, 2]) and resnet50 (Bottleneck x "
            f"[3, 4, 6, 3]) map to normlight; this is {kind} x {list(stages)}"
            + ("" if plain else " with a deep stem, grouped convs or anti-aliasing")
        )
    eps = {float(m.eps) for m in peer.modules() if isinstance(m, nn.BatchNorm2d)}
    if len(eps) != 1:
        raise CheckpointError(f"{source}: the ResNet's norms must be BatchNorms with one eps, got {sorted(eps)}")
    settings = dict(
        norm="batchnorm",
        norm_kwargs={"eps": eps.pop()},
        num_classes=peer.num_classes,
        in_chans=peer.conv1.in_channels,
    )
    model = create_model(preset, **settings)
    state = peer.state_dict()
    return model, state, example_images(model.in_chans, CNN_SIZE, floating_dtype(state))


# ---------------------------------------------------------------------------------------------- export
def vit_writers(model: nn.Module) -> Writers:
    """Everything that writes into a ViT's residual stream, with the dim spanning the model width."""
    conv = model.patch_embed.proj
    out: Writers = [("patch_embed.proj.weight", conv.weight, 0), ("pos_emb", model.pos_emb, -1)]
    out += [("patch_embed.proj.bias", conv.bias, 0)] if conv.bias is not None else []
    out += [("cls_token", model.cls_token, -1)] if model.cls_token is not None else []
    for i, blk in enumerate(model.blocks):
        for name, lin in (("attn.out_proj", blk.attn.out_proj), ("mlp.fc2", blk.mlp.fc2)):
            out += [(f"blocks.{i}.{name}.weight", lin.weight, 0)]
            out += [(f"blocks.{i}.{name}.bias", lin.bias, 0)] if lin.bias is not None else []
    return out


def vit_export(model: nn.Module, fmt: str) -> tuple[dict, dict]:
    """(timm config.json, timm-named state) for a normlight ViT the timm layout holds exactly."""
    from normlight.blocks.factory import get_placement

    problems = []
    if model.placement_cls is not get_placement("pre"):
        problems.append(f"placement {model.placement_cls.__name__} (timm's ViT is pre-norm)")
    if model.pool != "cls" or model.pe_norms is not None or model.patch_embed.dual or model.logit_scale is not None:
        problems.append("pool other than 'cls', LaPE, Dual PatchNorm or a logit scale")
    for i, blk in enumerate(model.blocks):
        a = blk.attn
        if not all(isinstance(m, nn.Identity) for m in (a.q_norm, a.k_norm, a.v_norm, a.inner_norm, blk.mlp.mid_norm)):
            problems.append(f"blocks[{i}] has qk/v/inner/mid norms")
        if (
            a.head_scale is not None
            or a.scale is not None
            or a.rope is not None
            or blk.mlp.act not in ("gelu", "gelu_tanh")
        ):
            problems.append(f"blocks[{i}] has a head scale, attention scale, RoPE or mlp={blk.mlp.act!r}")
    if problems:
        raise CheckpointError(f"export {fmt}: timm's ViT layout cannot hold {'; '.join(dict.fromkeys(problems))}")
    writers = lambda: vit_writers(model)
    state, eps = {}, []
    norms = [(f"blocks.{i}.{n}", getattr(b, n)) for i, b in enumerate(model.blocks) for n in ("norm1", "norm2")]
    for name, norm in norms + [("norm", model.norm)]:
        w, b, e = layernorm_params(norm, name, fmt, writers, model.pos_emb)
        state[f"{name}.weight"], state[f"{name}.bias"] = w, b
        eps.append(e)
    eps = one_eps(eps, fmt)
    if eps != VIT_EPS:
        raise CheckpointError(
            f"export {fmt}: timm's ViT LayerNorm eps is {VIT_EPS} and cannot be configured; this model's norms use "
            f"{eps} (normlight's ViT presets default to 1e-5: build with norm_kwargs={{'eps': {VIT_EPS}}})"
        )
    for key, t in model.state_dict().items():
        if ".norm1." not in key and ".norm2." not in key and not key.startswith("norm."):
            state[key] = t
    b0 = model.blocks[0]
    args = dict(
        img_size=model.img_size,
        patch_size=model.patch_embed.patch_size,
        in_chans=model.in_chans,
        num_classes=model.num_classes,
        embed_dim=b0.dim,
        depth=len(model.blocks),
        num_heads=b0.attn.num_heads,
        mlp_ratio=b0.mlp.fc1.out_features / b0.dim,
        qkv_bias=b0.attn.qkv.bias is not None,
        proj_bias=b0.attn.out_proj.bias is not None,
        global_pool="token",
        class_token=True,
    )
    if b0.mlp.act == "gelu_tanh":
        args["act_layer"] = "gelu_tanh"
    config = dict(architecture="vit_base_patch16_224", num_classes=model.num_classes, model_args=args)
    dtype = model.pos_emb.dtype
    return config, {timm_vit_name(k): v.detach().to(dtype) for k, v in state.items()}


def export(model: nn.Module, path: Path) -> Path:
    """Write ``model`` as a timm model directory (config.json + model.safetensors); return the directory."""
    import timm
    from safetensors.torch import save_file

    fmt = "timm"
    family, name = getattr(model, "family", None), getattr(model, "spec", {}).get("name")
    if family == "vit":
        config, state = vit_export(model, fmt)
        size = model.img_size
    elif family == "resnet" and name in ("resnet18", "resnet50"):
        args = {"num_classes": model.num_classes, "in_chans": model.in_chans}
        config = dict(architecture=name, num_classes=model.num_classes, model_args=args)
        state, size = {k: v.detach() for k, v in model.state_dict().items()}, CNN_SIZE
    else:
        raise CheckpointError(f"export {fmt}: only normlight ViTs and resnet18/resnet50 have a timm layout")
    in_chans, device = model.in_chans, next(model.parameters()).device
    config["pretrained_cfg"] = dict(
        num_classes=model.num_classes,
        input_size=[in_chans, model.img_size, model.img_size],
        first_conv="patch_embed.proj" if family == "vit" else "conv1",
        classifier="head" if family == "vit" else "fc",
        fixed_input_size=family == "vit",
    )
    dtype = floating_dtype(state)
    peer = timm.create_model(config["architecture"], pretrained=False, dtype=dtype, **config["model_args"])
    try:
        peer.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"export {fmt}: the timm model does not take this state: {exc}") from exc
    check_same_outputs(peer.to(device), model, example_images(in_chans, size, dtype).to(device), f"export {fmt}")
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path
