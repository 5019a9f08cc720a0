"""EvoNorm-B0 and EvoNorm-S0 (Liu et al. 2020, "Evolving Normalization-Activation Layers").

Both include the nonlinearity (``replaces_activation = True``: models drop the separate activation).
Channels-last ``(N, *positions, C)``; CNN maps come through the channels-first adapter.

B0 (batch-dependent)::

    y = x / max( sqrt(var_batch + eps),  v * x + sqrt(var_inst + eps) ) * gamma + beta

``var_batch`` per channel over batch and positions (biased; the running estimate is updated with
the unbiased ``n/(n-1)`` correction and used in eval), ``var_inst`` per sample and channel over
positions (biased). The numerator is not centered.

S0 (batch-independent)::

    y = x * sigmoid(v * x) / sqrt(var_group(x) + eps) * gamma + beta

``var_group`` per sample over positions and the group's channels of the *original* x (biased).
"""

from __future__ import annotations

import torch
from torch import nn

from normlight import distributed
from normlight.norms import _batchstats as bs
from normlight.norms import _fast_batch, _fast_group, fast


class EvoNormB0(nn.Module):
    """EvoNorm-B0 with options ``eps`` (1e-3), ``momentum`` (0.1), ``sync_stats``; gamma=1, beta=0, v=1.

    ``batch_stat`` is the batch variance of the last training forward, ``running_stat`` the running
    variance used in eval.
    """

    uses_batch_statistics = True
    replaces_activation = True
    description = "EvoNorm-B0: batch-variance / instance-std max-normalizer with built-in nonlinearity"
    paper = "Liu et al. 2020, Evolving Normalization-Activation Layers"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-3,
        momentum: float = 0.1,
        sync_stats: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.num_features, self.eps, self.momentum, self.sync_stats = num_features, eps, momentum, sync_stats
        self.weight = nn.Parameter(torch.ones(num_features, **kw))
        self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        self.v = nn.Parameter(torch.ones(num_features, **kw))
        self.register_buffer("running_var", torch.ones(num_features, **kw))
        self.batch_stat: torch.Tensor | None = None

    @property
    def running_stat(self) -> torch.Tensor:
        """The running variance used in eval."""
        return self.running_var

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalize-and-activate ``(N, *positions, C)``; ``mask`` keeps padding out of both variances."""
        mask = bs.check_input("evonorm_b0", x, self.num_features, mask)
        if x.ndim < 3:
            raise ValueError(
                f"evonorm_b0: needs positions (tokens or spatial dims) for its instance variance; "
                f"got shape {tuple(x.shape)}, expected (N, *positions, C)"
            )
        xf = x.to(bs.stat_dtype(x))
        if fast.on(self):
            return self._fast(xf, mask).to(x.dtype)
        if self.training:
            n, _, var = bs.moments("evonorm_b0", bs.rows(xf, mask), distributed.sync_active(self.sync_stats, True))
            self.batch_stat = var.detach().float()
            bs.update_running(self.running_var, var * (n / (n - 1)), self.momentum)
        else:
            var = self.running_var.to(xf.dtype)
        _, var_inst = bs.group_moments(xf, self.num_features, mask)  # (N, 1, C, 1)
        std_inst = torch.sqrt(var_inst + self.eps).reshape(x.shape[0], *(1,) * (x.ndim - 2), self.num_features)
        left = torch.sqrt(var + self.eps)
        right = torch.addcmul(std_inst, self.v.to(xf.dtype), xf)  # v * x + std_inst in one pass
        y = torch.addcmul(self.bias.to(xf.dtype), xf / torch.maximum(left, right), self.weight.to(xf.dtype))
        return y.to(x.dtype)

    def _fast(self, xf: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # one Function for statistics, max and affine (see _fast_batch.EvoNormB0Function)
        x3, dt = xf.reshape(xf.shape[0], -1, self.num_features), xf.dtype
        real = None if mask is None else mask.reshape(-1)
        v, w, b = self.v.to(dt), self.weight.to(dt), self.bias.to(dt)
        if not self.training:
            y, _ = _fast_batch.evonorm_b0(x3, v, w, b, real, 1, False, self.eps, self.running_var, fast.compiled(self))
            return y.reshape(xf.shape)
        sync = distributed.sync_active(self.sync_stats, True)
        n = _fast_batch.row_count("evonorm_b0", x3.reshape(-1, self.num_features), real, sync)
        y, var = _fast_batch.evonorm_b0(x3, v, w, b, real, n, sync, self.eps, None, fast.compiled(self))
        self.batch_stat = var.detach().float()
        bs.update_running(self.running_var, var * (n / (n - 1)), self.momentum)
        return y.reshape(xf.shape)


class EvoNormS0(nn.Module):
    """EvoNorm-S0 with options ``num_groups`` (32, must divide the channels), ``eps`` (1e-5); gamma=1, beta=0, v=1."""

    uses_batch_statistics = False
    replaces_activation = True
    description = "EvoNorm-S0: swish-like gate over group std, batch-independent, with built-in nonlinearity"
    paper = EvoNormB0.paper

    def __init__(self, num_features: int, num_groups: int = 32, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        if num_groups < 1 or num_features % num_groups:
            raise ValueError(
                f"evonorm_s0: num_groups={num_groups} must be a positive divisor of num_features="
                f"{num_features}; pass norm_kwargs={{'num_groups': g}} with g dividing {num_features}"
            )
        kw = dict(device=device, dtype=dtype)
        self.num_features, self.num_groups, self.eps = num_features, num_groups, eps
        self.weight = nn.Parameter(torch.ones(num_features, **kw))
        self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        self.v = nn.Parameter(torch.ones(num_features, **kw))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Gate and normalize ``(N, *positions, C)`` per sample; ``mask`` keeps padding out of the group variance."""
        mask = bs.check_input("evonorm_s0", x, self.num_features, mask)
        xf = x.to(bs.stat_dtype(x))
        if fast.on(self) and mask is None:
            args = (self.v.to(xf.dtype), self.weight.to(xf.dtype), self.bias.to(xf.dtype), self.num_groups, self.eps)
            return _fast_group.evonorm_s0(xf, *args, fast.compiled(self)).to(x.dtype)
        _, var = bs.group_moments(xf, self.num_groups, mask)
        gate = xf * torch.sigmoid(self.v.to(xf.dtype) * xf)
        # fold 1/std (per sample and group) and gamma into one per-(sample, channel) scale: one full pass
        inv = torch.rsqrt(var + self.eps).expand(-1, -1, -1, self.num_features // self.num_groups)
        scale = inv.reshape(x.shape[0], *(1,) * (x.ndim - 2), self.num_features) * self.weight.to(xf.dtype)
        return torch.addcmul(self.bias.to(xf.dtype), gate, scale).to(x.dtype)
