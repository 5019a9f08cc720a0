"""Transformer blocks: attention, MLP and the placement base class ``Block`` (placements in ``placements/``)."""

from normlight.blocks.attention import Attention, RotaryEmbedding
from normlight.blocks.base import Block
from normlight.blocks.mlp import MLP

__all__ = ["Attention", "Block", "MLP", "RotaryEmbedding"]
