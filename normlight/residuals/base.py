"""The sites a residual plugin can act on, and the base class of the built-in residuals.

A residual plugin declares ``sites`` (class attribute, default ``("attn", "mlp")``); the block builds one
module per declared site, per layer, with the context it names (``site``, ``layer_idx``, ``num_layers``,
``num_heads``, ``device``, ``dtype``):

- ``attn`` / ``mlp``: ``forward(x, branch) -> stream``, called by the placement wherever it joins a sublayer's
  output to the stream (``x + F(x)`` becomes ``residual(x, F(x))``); a site the plugin does not declare keeps
  the plain add;
- ``depth``: ``forward(history) -> stream``, called by the model after each block with
  ``[embeddings, block_1 output, ..., block_l output]``; its result is the next block's input;
- ``value``: ``forward(v) -> v`` inside attention, on the values (B, H, T, head_dim) before softmax-weighting.
  A class that needs the other layers' modules (e.g. the first layer's values) defines
  ``link_layers(modules)``, which the model calls once with the modules of every layer in depth order.
"""

from __future__ import annotations

import torch
from torch import nn

SITES = ("attn", "mlp", "depth", "value")
BRANCH_SITES = ("attn", "mlp")


class Residual(nn.Module):
    """A residual at a branch site: ``forward(x, branch)`` returns the new stream (B, T, D)."""

    sites: tuple = BRANCH_SITES

    def __init__(self, dim: int | None = None):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The stream after the sublayer with output ``branch`` joined stream ``x``."""
        raise NotImplementedError
