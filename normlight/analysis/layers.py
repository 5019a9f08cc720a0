"""A trained model seen as ``embed -> blocks[0..L-1] -> readout``: the one view every analysis works on.

::

    x ─ embed ─ h_0 ─ block 0 ─ h_1 ─ ... ─ block L-1 ─ h_L ─ readout (final norm [, pool], head) ─ logits ─ loss

``h_l`` is the residual stream entering block ``l`` (``h_L`` leaves the last block). A family adapter, a small
:class:`LayerModel` subclass (``gpt``, ``vit``), builds this view from a model; it is found by the model's
``family`` attribute. Any other ``nn.Module`` (an imported pretrained model, a plugin's architecture) gets the
view by subclassing :class:`LayerModel` and calling :func:`register_family`, or by passing the subclass
instance directly to :func:`normlight.analysis.analyze`.

A test checks for every family that ``readout(blocks(embed(x)))`` equals ``model(x)``, so the view cannot
silently drift from the model's own forward.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from normlight.errors import NormlightError


class AnalysisInputError(NormlightError):
    """A model, checkpoint or data set that ``normlight analyze`` cannot work on; the message says why."""


class LayerModel:
    """The layer view of ``model``; subclasses implement :meth:`embed`, :meth:`readout` (and :meth:`block` if a
    block needs more than the stream). ``task`` is ``"lm"`` (targets per token) or ``"classification"``."""

    family = "?"
    task = "lm"

    def __init__(self, model: nn.Module):
        self.model = model

    @property
    def blocks(self) -> nn.ModuleList:
        """The residual blocks in depth order."""
        return self.model.blocks

    @property
    def depth(self) -> int:
        """Number of blocks L."""
        return len(self.blocks)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The stream entering block 0 (``h_0``)."""
        raise NotImplementedError

    def block(self, i: int, h: torch.Tensor) -> torch.Tensor:
        """Block ``i`` applied to the stream ``h`` (block ``i`` may be run at any position, e.g. swapped)."""
        return self.blocks[i](h)

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from a stream after the last block (final norm and head)."""
        raise NotImplementedError

    def summary(self, h: torch.Tensor) -> torch.Tensor:
        """(B, D): the position whose angle the angular distance measures (the last token of a causal LM)."""
        return h[:, -1]

    def branch(self, i: int, kind: str) -> nn.Module | None:
        """The module whose output is sub-layer ``kind`` ("attn" | "mlp") of block ``i``'s residual contribution:
        its output norm if the placement has one (Peri-LN, NormFormer), else the sub-layer itself."""
        blk = self.blocks[i]
        out_norm = getattr(blk, f"{kind}_out_norm", None)
        return out_norm if out_norm is not None else getattr(blk, kind, None)

    def loss_terms(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float, int]:
        """(summed cross-entropy, number of correct top-1 predictions, number of targets) of one batch."""
        logits = logits.reshape(-1, logits.shape[-1]).float()
        y = y.reshape(-1)
        loss = F.cross_entropy(logits, y, reduction="sum")
        return float(loss), float((logits.argmax(-1) == y).sum()), int(y.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's forward through the view (equal to ``model(x)``)."""
        h = self.embed(x)
        for i in range(self.depth):
            h = self.block(i, h)
        return self.readout(h)

    def copy(self) -> "LayerModel":
        """The same view on a deep copy of the model (for healing fine-tunes that must not touch the original)."""
        return type(self)(copy.deepcopy(self.model))


class GPTLayers(LayerModel):
    """normlight's GPT: token (+ learned position) embedding; final norm, head and optional logit scale."""

    family = "gpt"
    task = "lm"

    def embed(self, x):
        """Token embedding [x emb_scale] + learned positions (RoPE lives in the attention), then the dropout."""
        m = self.model
        h = m.tok_emb(x)
        if getattr(m, "emb_scale", None) is not None:
            h = h * m.emb_scale.to(h.dtype)
        if m.pos_emb is not None:
            h = h + m.pos_emb(torch.arange(x.shape[1], device=x.device))
        return m.drop(h)

    def readout(self, h):
        """Final norm, head, and nGPT's logit scale where the placement has one (the model's own ``logits``)."""
        return self.model.logits(h)


class ViTLayers(LayerModel):
    """normlight's ViT: patches [+ class token] + positions; final norm per token, pooling, head. With LaPE
    block ``i`` always receives its own position embedding ``pe_i``, wherever it runs."""

    family = "vit"
    task = "classification"

    def embed(self, x):
        """Patch tokens, the class token, positions (unless LaPE), dropout."""
        m = self.model
        h = m.patch_embed(x)
        if m.cls_token is not None:
            h = torch.cat([m.cls_token.expand(h.shape[0], -1, -1).to(h.dtype), h], dim=1)
        return m.drop(h + m.pos_emb) if m.pe_norms is None else m.drop(h)

    def block(self, i, h):
        """Block ``i``; under LaPE with its position embedding ``pe_i = LN_pe^i(...LN_pe^0(pos_emb))``."""
        m = self.model
        if m.pe_norms is None:
            return m.blocks[i](h)
        pe = m.pos_emb
        for norm in m.pe_norms[: i + 1]:
            pe = norm(pe)
        return m.blocks[i](h, pe)

    def readout(self, h):
        """Final norm and the pooling plugin in the pooling's order, head, logit scale (the model's ``classify``)."""
        return self.model.classify(h)

    def summary(self, h):
        """The class token, or the token mean for pooled ViTs."""
        return h[:, 0] if getattr(self.model.pooling, "uses_class_token", False) else h.mean(dim=1)


FAMILIES: dict[str, Callable[[nn.Module], LayerModel]] = {"gpt": GPTLayers, "vit": ViTLayers}


def register_family(family: str, adapter: Callable[[nn.Module], LayerModel]) -> None:
    """Make models whose ``family`` is ``family`` analyzable through ``adapter(model) -> LayerModel``."""
    FAMILIES[family] = adapter


def as_layer_model(model: nn.Module | LayerModel, family: str | None = None) -> LayerModel:
    """The layer view of ``model``: as given if it is one already, else by ``family`` (default ``model.family``)."""
    if isinstance(model, LayerModel):
        return model
    family = family or getattr(model, "family", None)
    if family not in FAMILIES:
        raise AnalysisInputError(
            f"layer analysis has no adapter for model family {family!r} ({type(model).__name__}); supported: "
            f"{', '.join(sorted(FAMILIES))}. Register one with normlight.analysis.register_family(family, adapter)"
        )
    return FAMILIES[family](model)
