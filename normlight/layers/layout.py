"""Layout adapters: run a norm written for ``(..., C)`` on channels-first ``(N, C, *spatial)`` maps."""

from __future__ import annotations

import torch
from torch import nn


class ChannelsFirst(nn.Module):
    """Apply a channels-last norm to ``(N, C, H, W)`` by viewing the input as ``(N, H, W, C)``.

    ::

        x (N,C,H,W) --movedim(1,-1)--> (N,H,W,C) --norm--> (N,H,W,C) --movedim(-1,1)--> (N,C,H,W)

    Batch, then positions, then features: the wrapped norm sees dim 0 as the batch and the dims
    between as positions, so a batch-statistic norm takes its statistics over (N, H, W) as BatchNorm2d does.
    """

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm
        # the contract flags live on the class of a plugin; copy them so callers can read them here
        self.uses_batch_statistics = getattr(norm, "uses_batch_statistics", False)
        self.replaces_activation = getattr(norm, "replaces_activation", False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize a channels-first tensor with the wrapped channels-last norm."""
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)
