"""Batch-Channel Normalization (Qiao et al., "Micro-Batch Training with Batch-Channel Normalization
and Weight Standardization").

::

    x --BatchNorm (per channel, running stats, per-channel affine)--> GroupNorm (per sample and
      group over positions and the group's channels, no running stats) --per-GROUP affine--> y

The final affine has one weight/bias per *group* (init 1 / 0), not per channel. The BatchNorm
stage carries the batch statistics (synchronized across ranks like ``batchnorm``); the GroupNorm
stage is per sample. The paper pairs BCN with weight-standardized convolutions (a model option).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normlight.norms import _batchstats as bs
from normlight.norms import _fast_group, fast
from normlight.norms.batchnorm import BatchNorm


class BatchChannelNorm(bs.InnerBatchStats, nn.Module):
    """BCN with options ``num_groups`` (default 32, must divide the channels), ``eps``, ``momentum``, ``sync_stats``.

    ``batch_stat`` / ``running_stat`` are the BatchNorm stage's batch and running variance.
    """

    uses_batch_statistics = True
    description = "Batch-Channel Norm: BatchNorm, then GroupNorm with a per-group affine"
    paper = "Qiao et al. 2019, Micro-Batch Training with Batch-Channel Normalization and Weight Standardization"

    def __init__(
        self,
        num_features: int,
        num_groups: int = 32,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        sync_stats: bool = True,
        layout: str | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_groups < 1 or num_features % num_groups:
            raise ValueError(
                f"bcn: num_groups={num_groups} must be a positive divisor of num_features={num_features}; "
                f"pass norm_kwargs={{'num_groups': g}} with g dividing {num_features}"
            )
        self.num_features, self.num_groups, self.eps = num_features, num_groups, eps
        self.channels_first = layout == "channels_first"
        self.bn = BatchNorm(
            num_features, eps=eps, momentum=momentum, sync_stats=sync_stats, layout=layout, device=device, dtype=dtype
        )
        self.bn.label = "bcn (BatchNorm stage)"
        self.weight = nn.Parameter(torch.ones(num_groups, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(num_groups, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        """Options shown in ``print(module)``."""
        return f"num_groups={self.num_groups}, eps={self.eps}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """BN then GroupNorm with a per-group affine; ``mask`` keeps padding out of both stages' statistics."""
        mask = bs.check_input("bcn", x, self.num_features, mask, self.channels_first)
        y = self.bn(x.to(bs.stat_dtype(x)), mask=mask)  # keep the intermediate in float32 for half inputs
        per_channel = self.num_features // self.num_groups
        w = self.weight.to(y.dtype).repeat_interleave(per_channel)  # per-group values, tied across the group
        b = self.bias.to(y.dtype).repeat_interleave(per_channel)
        if fast.on(self) and not self.channels_first and mask is None and x.ndim > 2:
            return _fast_group.group_norm(y, self.num_groups, w, b, self.eps, fast.compiled(self)).to(x.dtype)
        if self.channels_first and mask is None:
            shape = (-1,) + (1,) * (x.ndim - 2)
            return (F.group_norm(y, self.num_groups, eps=self.eps) * w.view(shape) + b.view(shape)).to(x.dtype)
        if self.channels_first:
            y = y.movedim(1, -1)
        mean, var = bs.group_moments(y, self.num_groups, mask)
        g = y.reshape(y.shape[0], -1, self.num_groups, per_channel)
        out = ((g - mean) * torch.rsqrt(var + self.eps)).reshape(y.shape) * w + b
        return (out.movedim(-1, 1) if self.channels_first else out).to(x.dtype)
