"""Exact conversion of a (trained) Pre-LN GPT or ViT to Pre-RMSNorm and Pre-CRMSNorm (Jiang et al. 2023).

Recipe (reference norms.md sec 2), on a copy of the model:
1. fold every LayerNorm's gamma/beta into the linear that reads its output (attn.qkv, mlp.fc1, head):
   ``W' = W diag(gamma)``, ``b' = b + W beta``;
2. make the residual stream zero-mean: every writer into it (token/position embeddings, cls token,
   patch projection, attn.out_proj, mlp.fc2) is re-centred over its output (model-width) dim;
3. then LayerNorm(x) == RMSNorm(x) (no affine, eps inside the root) on the stream: swap the norms.
Pre-CRMSNorm additionally stores the zero-mean d-vector in d-1 dims (the last coordinate is minus
the sum of the others): writers drop their last output row, readers become ``W[:, :-1] - W[:, -1:]``,
and the norms become CRMSNorm over d-1 features.

The converted model computes the same logits up to float rounding. Its ``spec`` records the new norm
and ``converted_from``; rebuilding from that spec gives the architecture, not the converted weights.
Supported: placement "pre" with LayerNorm (normlight's or torch's) everywhere; ViT with pool "cls" or
"mean" and without Dual PatchNorm / LaPE (their norms are not on the residual-stream path this recipe covers).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from normlight.blocks.factory import get_placement
from normlight.norms.factory import create_norm
from normlight.norms.layernorm import LayerNorm


def to_pre_rmsnorm(model: nn.Module) -> nn.Module:
    """A copy of a Pre-LN GPT/ViT with zero-mean residual stream and affine-free RMSNorm (same outputs)."""
    return _convert(model, compress=False)


def to_pre_crmsnorm(model: nn.Module) -> nn.Module:
    """A copy of a Pre-LN GPT/ViT whose residual stream lives in d-1 dims with CRMSNorm (same outputs)."""
    return _convert(model, compress=True)


def _check(model: nn.Module) -> None:
    what = f"{type(model).__name__} (family {getattr(model, 'family', '?')!r})"
    if getattr(model, "family", None) not in ("gpt", "vit"):
        raise ValueError(f"convert: only GPT and ViT models convert, got {what}")
    if model.placement_cls is not get_placement("pre"):
        raise ValueError(f"convert: needs placement 'pre', got {model.placement_cls.__name__} in {what}")
    norms = [("final norm", model.norm)] + [
        (f"blocks[{i}].{n}", getattr(b, n)) for i, b in enumerate(model.blocks) for n in ("norm1", "norm2")
    ]
    for where, norm in norms:
        if not isinstance(norm, (nn.LayerNorm, LayerNorm)) or norm.weight is None:
            raise ValueError(f"convert: {where} is {type(norm).__name__}; needs an affine LayerNorm (norm='layernorm')")
    for key, default in (("residual", "add"), ("mixer", "attention"), ("depth_regularizer", None)):
        if model.spec.get(key, default) != default:
            raise ValueError(f"convert: needs the default {key} ({default!r}), got {model.spec[key]!r} in {what}")
    if model.family == "vit":
        if model.spec.get("pool") not in ("cls", "mean") or model.pe_norms is not None or model.patch_embed.dual:
            raise ValueError(
                "convert: ViT with a pool other than 'cls'/'mean', lape=True or dual_patchnorm=True is not supported"
            )


@torch.no_grad()
def _fold_norm(norm: nn.Module, lin: nn.Linear) -> nn.Linear:
    """A Linear computing ``lin(gamma * n + beta)`` from the un-affine normalized n."""
    w = lin.weight.double()
    g = norm.weight.double()
    b = norm.bias.double() if norm.bias is not None else torch.zeros_like(g)
    out = nn.Linear(lin.in_features, lin.out_features, bias=True, device=lin.weight.device, dtype=lin.weight.dtype)
    out.weight.copy_(w * g)
    out.bias.copy_((lin.bias.double() if lin.bias is not None else 0) + w @ b)
    return out


@torch.no_grad()
def _center_writer(lin: nn.Linear, compress: bool) -> nn.Linear:
    """Re-centre a writer over its output dim; with ``compress`` drop the last output row."""
    w = lin.weight.double()
    w = w - w.mean(dim=0, keepdim=True)
    b = None if lin.bias is None else lin.bias.double() - lin.bias.double().mean()
    keep = lin.out_features - 1 if compress else lin.out_features
    out = nn.Linear(lin.in_features, keep, bias=b is not None, device=lin.weight.device, dtype=lin.weight.dtype)
    out.weight.copy_(w[:keep])
    if b is not None:
        out.bias.copy_(b[:keep])
    return out


@torch.no_grad()
def _compress_reader(lin: nn.Linear) -> nn.Linear:
    """A reader of the compressed stream: ``W_c = W[:, :-1] - W[:, -1:]`` (bias unchanged)."""
    out = nn.Linear(
        lin.in_features - 1,
        lin.out_features,
        bias=lin.bias is not None,
        device=lin.weight.device,
        dtype=lin.weight.dtype,
    )
    out.weight.copy_(lin.weight[:, :-1] - lin.weight[:, -1:])
    if lin.bias is not None:
        out.bias.copy_(lin.bias)
    return out


def _center_param(t: torch.Tensor, compress: bool) -> nn.Parameter:
    """Zero-mean over the last (model-width) dim; with ``compress`` drop the last coordinate."""
    c = t.double() - t.double().mean(dim=-1, keepdim=True)
    return nn.Parameter((c[..., :-1] if compress else c).to(t.dtype))


@torch.no_grad()
def _convert(model: nn.Module, compress: bool) -> nn.Module:
    _check(model)
    m = copy.deepcopy(model)
    dim = m.norm.weight.numel()
    eps = m.norm.eps
    new_norm = (
        (lambda: create_norm("crmsnorm", dim - 1, eps=eps))
        if compress
        else (lambda: create_norm("rmsnorm", dim, eps=eps, elementwise_affine=False))
    )
    reader = _compress_reader if compress else (lambda lin: lin)

    for blk in m.blocks:
        blk.attn.qkv = reader(_fold_norm(blk.norm1, blk.attn.qkv))
        blk.mlp.fc1 = reader(_fold_norm(blk.norm2, blk.mlp.fc1))
        blk.attn.out_proj = _center_writer(blk.attn.out_proj, compress)
        blk.mlp.fc2 = _center_writer(blk.mlp.fc2, compress)
        blk.norm1, blk.norm2 = new_norm(), new_norm()
    m.head = reader(_fold_norm(m.norm, m.head))  # also unties a tied GPT head
    m.norm = new_norm()

    if m.family == "gpt":
        for name in ("tok_emb", "pos_emb"):
            emb = getattr(m, name)
            if emb is not None:
                setattr(m, name, nn.Embedding.from_pretrained(_center_param(emb.weight, compress), freeze=False))
    else:
        conv = m.patch_embed.proj
        w = conv.weight.double() - conv.weight.double().mean(dim=0, keepdim=True)
        b = conv.bias.double() - conv.bias.double().mean()
        keep = conv.out_channels - 1 if compress else conv.out_channels
        new = nn.Conv2d(
            conv.in_channels,
            keep,
            conv.kernel_size,
            stride=conv.stride,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        new.weight.copy_(w[:keep])
        new.bias.copy_(b[:keep])
        m.patch_embed.proj = new
        m.pos_emb = _center_param(m.pos_emb, compress)
        if m.cls_token is not None:
            m.cls_token = _center_param(m.cls_token, compress)
    m.spec = {
        **m.spec,
        "norm": "crmsnorm" if compress else "rmsnorm",
        "norm_kwargs": {"eps": eps},
        "converted_from": m.spec.get("norm"),
        "tie_weights": False,
    }
    return m
