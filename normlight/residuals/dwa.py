"""DenseFormer (Pagliardini et al. 2024): a Depth-Weighted-Average after every block.

After block i (0-based) the model keeps its output ``x_{i+1}`` next to the embeddings ``x_0`` and every
earlier block output; the next block reads ``y_i = sum_j alpha_{i,j} x_j`` over the kept outputs. Weights
start as the identity (``alpha_{i,i+1} = 1``, all others 0), so a fresh DenseFormer is the plain model.
``dilation`` k keeps only the x_j with ``j = i+1 (mod k)``; ``period`` p adds a DWA only after every p-th
block (the paper's kxp variants; 1x1 is the full DenseFormer). The residuals inside the blocks stay plain.
"""

from __future__ import annotations

import torch
from torch import nn

from normlight.residuals.base import Residual


class DWA(Residual):
    """One block's Depth-Weighted-Average over ``[embeddings, block_1 .. block_{i+1} outputs]``.

    ::

        x_0 (embeddings) ──────────────────────────── (x alpha_i0) ──┐
        x_1 = block_1(...) ─────────────────────────── (x alpha_i1) ──┤
        ...                                                           (+) ──> input of block i+2
        x_{i+1} = block_{i+1}(y_{i-1}) ────────────── (x alpha_i,i+1) ┘   (alpha init: 1 on x_{i+1}, 0 elsewhere)
    """

    description = "DenseFormer: weighted average of all earlier block outputs after each block (init identity)"
    paper = (
        "Pagliardini et al. 2024, DenseFormer: Enhancing Information Flow in Transformers via Depth Weighted Averaging"
    )
    sites = ("depth",)

    def __init__(
        self, dim: int | None = None, layer_idx: int = 0, num_layers: int = 1, dilation: int = 1, period: int = 1
    ):
        super().__init__(dim)
        if dilation < 1 or period < 1:
            raise ValueError(f"dwa needs dilation >= 1 and period >= 1, got {dilation}, {period}")
        self.layer_idx, self.dilation, self.period = int(layer_idx), int(dilation), int(period)
        i = self.layer_idx + 1  # index of this block's output in the history
        self.sources = list(range(i % dilation, i + 1, dilation)) if i % period == 0 else [i]
        weight = torch.zeros(len(self.sources))
        weight[-1] = 1.0
        self.weight = nn.Parameter(weight) if i % period == 0 else None

    def forward(self, history: list[torch.Tensor]) -> torch.Tensor:
        """The weighted average of the kept outputs (the block output itself between periods)."""
        if len(history) != self.layer_idx + 2:
            raise ValueError(
                f"dwa of block {self.layer_idx} needs {self.layer_idx + 2} stream states, got {len(history)}"
            )
        if self.weight is None:
            return history[-1]
        stacked = torch.stack([history[j] for j in self.sources])
        return torch.tensordot(self.weight.to(stacked.dtype), stacked, dims=1)

    def diagnostics(self) -> dict[str, float]:
        """alpha_{i,j} per kept source j (0 = embeddings)."""
        if self.weight is None:
            return {}
        return {f"w{j:02d}": float(w) for j, w in zip(self.sources, self.weight.detach())}

    def extra_repr(self) -> str:
        return f"layer_idx={self.layer_idx}, sources={self.sources}"
