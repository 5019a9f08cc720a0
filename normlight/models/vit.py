"""Vision Transformer on the shared block stack with any norm and placement.

::

    img (B,C,H,W) ─ patch embed ─ [cls] ─ (+ pos_emb | LaPE per block) ─ dropout ─ blocks ─ final norm + pool ─ head ─> logits

- patch embed: a stride-P conv; with ``dual_patchnorm=True`` (Kumar et al. 2023) a LINEAR embedding
  ``LN_pre(P*P*C pixels) -> Linear -> LN_post`` (sites patch_pre / patch_post) on patches flattened as (p1 p2 c);
- ``pool`` / ``pool_kwargs``: a pooling plugin (``normlight.list_poolings()``): "cls" (class token, the default),
  "mean", "max", "gem", "ggem", "attn", "attn_channelwise", "multi_layer_attn", ... The pooling declares where
  the final norm sits: per token before pooling ("cls", "gem", "attn", ...) or on the pooled vector after it
  ("mean", "max": timm's ``fc_norm``); ``pool_kwargs: {norm_position: pre|post}`` overrides. No class token is
  created unless the pooling reads one;
- ``residual`` / ``mixer`` / ``depth_regularizer`` (each with ``*_kwargs``): residual-connection, token-mixer
  and depth-regularizer plugins (defaults: "add", "attention", none);
- ``lape=True`` (Yu et al. 2023): the position embedding is not added to the input; block l gets
  ``pe_l = LN_pe^l(pe_{l-1})`` (site "pos", pe_0 = pos_emb) added to its attention input.

Presets (pre/layernorm, parameter counts asserted in tests): vit-tiny 32 px / patch 4 / depth 6 / dim 192 /
3 heads / 10 classes (2,693,578 params); vit-small 224 / 16 / 12 / 384 / 6 / 1000 (22,050,664); vit-base
224 / 16 / 12 / 768 / 12 / 1000 (86,567,656).

LayerNorm eps convention: the presets keep normlight's (and torch's) LayerNorm default eps 1e-5, while timm's
ViTs and big_vision use 1e-6 (timm's ``LayerNorm`` default). Pass ``norm_kwargs={"eps": 1e-6}`` to match them;
``normlight.models.load_pretrained("timm:vit_...")`` takes the eps from the checkpoint's own model and
``export_pretrained(..., format="timm")`` refuses any other eps (docs/pretrained.md). ``bias=False`` removes
the biases of the linears and of the norms.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from normlight.mixers.factory import declared as mixer_declared
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
from normlight.norms.factory import create_norm
from normlight.poolings.factory import create_pooling
from normlight.poolings.factory import declared as pooling_declared
from normlight.registry import spec_label


class PatchEmbed(nn.Module):
    """Images to patch tokens (B, N, D): conv, or Dual PatchNorm's LN -> Linear -> LN."""

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        in_chans: int,
        dim: int,
        *,
        dual_patchnorm: bool,
        norm: Any,
        norm_kwargs: dict | None,
    ):
        super().__init__()
        self.patch_size, self.dual = patch_size, dual_patchnorm
        if dual_patchnorm:
            patch_dim = patch_size * patch_size * in_chans
            self.norm_pre = create_norm(norm, patch_dim, site="patch_pre", **(norm_kwargs or {}))
            self.proj = nn.Linear(patch_dim, dim)
            self.norm_post = create_norm(norm, dim, site="patch_post", **(norm_kwargs or {}))
        else:
            self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """(B,C,H,W) -> (B, H/P * W/P, D)."""
        if not self.dual:
            return self.proj(img).flatten(2).transpose(1, 2)
        b, c, h, w = img.shape
        p = self.patch_size
        patches = img.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c)
        return self.norm_post(self.proj(self.norm_pre(patches)))


class ViT(nn.Module):
    """Image classifier; see the module docstring for the options."""

    family = "vit"

    def __init__(
        self,
        *,
        name: str = "vit",
        img_size: int = 32,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 10,
        depth: int = 6,
        dim: int = 192,
        num_heads: int = 3,
        mlp: str = "gelu",
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        bias: bool = True,
        pool: str = "cls",
        dual_patchnorm: bool = False,
        lape: bool = False,
        norm: Any = "layernorm",
        norm_kwargs: dict | None = None,
        placement: Any = "pre",
        placement_kwargs: dict | None = None,
        qk_norm: Any = None,
        qk_norm_kwargs: dict | None = None,
        pool_kwargs: dict | None = None,
        residual: Any = "add",
        residual_kwargs: dict | None = None,
        mixer: Any = "attention",
        mixer_kwargs: dict | None = None,
        depth_regularizer: Any = None,
        depth_regularizer_kwargs: dict | None = None,
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(
                f"vit: img_size {img_size} is not divisible by patch_size {patch_size}; "
                f"choose a patch size that divides the image side"
            )
        uses_cls = bool(pooling_declared(pool, "uses_class_token", False))
        if uses_cls and mixer_declared(mixer, "needs_grid", False):
            raise ValueError(
                f"vit: mixer {spec_label(mixer)} mixes tokens on the patch grid, but pooling {spec_label(pool)} adds a "
                "class token that is not on it; choose another pooling (mean, gem, ...) or mixer"
            )
        self.spec = {
            k: spec_value(v)
            for k, v in dict(
                name=name,
                img_size=img_size,
                patch_size=patch_size,
                in_chans=in_chans,
                num_classes=num_classes,
                depth=depth,
                dim=dim,
                num_heads=num_heads,
                mlp=mlp,
                mlp_ratio=mlp_ratio,
                dropout=dropout,
                bias=bias,
                pool=pool,
                dual_patchnorm=dual_patchnorm,
                lape=lape,
                norm=norm,
                norm_kwargs=norm_kwargs or {},
                placement=placement,
                placement_kwargs=placement_kwargs or {},
                qk_norm=qk_norm,
                qk_norm_kwargs=qk_norm_kwargs or {},
                pool_kwargs=pool_kwargs or {},
                residual=residual,
                residual_kwargs=residual_kwargs or {},
                mixer=mixer,
                mixer_kwargs=mixer_kwargs or {},
                depth_regularizer=depth_regularizer,
                depth_regularizer_kwargs=depth_regularizer_kwargs or {},
            ).items()
        }
        norm_kwargs, qk_norm_kwargs = with_norm_bias(norm_kwargs, bias), with_norm_bias(qk_norm_kwargs, bias)
        self.img_size, self.in_chans, self.num_classes, self.pool = img_size, in_chans, num_classes, pool
        self.patch_embed = PatchEmbed(
            img_size, patch_size, in_chans, dim, dual_patchnorm=dual_patchnorm, norm=norm, norm_kwargs=norm_kwargs
        )
        num_tokens = (img_size // patch_size) ** 2 + uses_cls
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if uses_cls else None
        self.pos_emb = nn.Parameter(torch.zeros(1, num_tokens, dim))
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
            causal=False,
            dropout=dropout,
            bias=bias,
            residual=residual,
            residual_kwargs=residual_kwargs,
            mixer=mixer,
            mixer_kwargs=mixer_kwargs,
        )
        self.pe_norms = (
            nn.ModuleList(
                create_norm(
                    norm, dim, site="pos", layer_idx=i, num_layers=depth, num_heads=num_heads, **(norm_kwargs or {})
                )
                for i in range(depth)
            )
            if lape
            else None
        )
        self.norm = final_norm(self.placement_cls, norm, dim, norm_kwargs, depth, num_heads)
        self.pooling = create_pooling(pool, dim, num_heads=num_heads, num_layers=depth, **(pool_kwargs or {}))
        if bool(getattr(self.pooling, "uses_class_token", False)) != uses_cls:
            raise ValueError(
                f"vit: pooling {spec_label(pool)} built a module whose uses_class_token differs from its class's"
            )
        self.depth_regularizer = build_depth_regularizers(depth_regularizer, depth_regularizer_kwargs, depth)
        setup_stack(self, self.pooling, depth_regularizer, exits_read_pooling=True)
        self.head = nn.Linear(dim, num_classes)
        self.logit_scale = self.blocks[0].logit_scale(num_classes)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_gpt2(
            self.blocks,
            [self.patch_embed.proj, self.head],
            depth_scaled=depth_scaled_init(self.placement_cls, self.blocks),
        )
        placement_init(self)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) for images (B, in_chans, img_size, img_size)."""
        if img.shape[1:] != (self.in_chans, self.img_size, self.img_size):
            raise ValueError(
                f"vit expects images of shape (B, {self.in_chans}, {self.img_size}, {self.img_size}), "
                f"got {tuple(img.shape)}"
            )
        x = self.patch_embed(img)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        if self.pe_norms is None:
            x, hidden = run_blocks(self, self.drop(x + self.pos_emb))
        else:
            pes, pe = [], self.pos_emb
            for pe_norm in self.pe_norms:
                pe = pe_norm(pe)
                pes.append(pe)
            x, hidden = run_blocks(self, self.drop(x), pes)
        self.early_exits = early_exits(self, hidden, self.classify)
        return self.classify(x, hidden)

    def classify(self, x: torch.Tensor, hidden: list | None = None) -> torch.Tensor:
        """Logits from tokens (B, T, D): final norm and pooling in the pooling's order, then the head."""
        logits = self.head(readout(self.norm, self.pooling, x, hidden))
        return logits if self.logit_scale is None else self.logit_scale(logits)


def vit_tiny(**kwargs: Any) -> ViT:
    """CIFAR-sized ViT: 32 px, patch 4, depth 6, dim 192, 3 heads, 10 classes (2,693,578 params)."""
    return ViT(
        **{
            "name": "vit-tiny",
            **dict(img_size=32, patch_size=4, depth=6, dim=192, num_heads=3, num_classes=10),
            **kwargs,
        }
    )


def vit_small(**kwargs: Any) -> ViT:
    """ViT-S/16: 224 px, patch 16, depth 12, dim 384, 6 heads, 1000 classes (22,050,664 params)."""
    return ViT(
        **{
            "name": "vit-small",
            **dict(img_size=224, patch_size=16, depth=12, dim=384, num_heads=6, num_classes=1000),
            **kwargs,
        }
    )


def vit_base(**kwargs: Any) -> ViT:
    """ViT-B/16: 224 px, patch 16, depth 12, dim 768, 12 heads, 1000 classes (86,567,656 params)."""
    return ViT(
        **{
            "name": "vit-base",
            **dict(img_size=224, patch_size=16, depth=12, dim=768, num_heads=12, num_classes=1000),
            **kwargs,
        }
    )
