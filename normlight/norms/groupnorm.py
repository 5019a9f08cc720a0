"""GroupNorm (Wu & He 2018) and InstanceNorm (Ulyanov et al. 2016): per-sample statistics over positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normlight.norms import _fast_group, fast
from normlight.norms._common import cast, check_features, check_layout, compute_dtype, fused_ok


def _fast_group_norm(module: nn.Module, x: torch.Tensor, groups: int) -> torch.Tensor:
    """The tokens-layout fast path: ``(N, *positions, C)`` without a channels-first copy (see ``_fast_group``)."""
    dt = compute_dtype(x)
    w, b = cast(module.weight, dt), cast(module.bias, dt)
    return _fast_group.group_norm(x.to(dt), groups, w, b, module.eps, fast.compiled(module)).to(x.dtype)


def _group_norm(x: torch.Tensor, groups: int, weight, bias, eps: float, channels_first: bool) -> torch.Tensor:
    """torch's fused group_norm on ``x`` with features last (default) or at dim 1; fp32 stats for half inputs."""
    moved = not channels_first and x.ndim > 2
    # Always hand the kernel a standard-contiguous (N, C, *pos) tensor: torch's CPU kernel for
    # channels_last-strided maps takes the variance in one pass and loses ~1% of the output when
    # |mean| / std ~ 200 (tested), so the copy is the price of accurate statistics.
    xc = (x.movedim(-1, 1) if moved else x).contiguous()
    dt = compute_dtype(xc)
    if dt == xc.dtype and fused_ok(xc, weight, bias):
        y = F.group_norm(xc, groups, weight, bias, eps)
    else:  # half inputs are upcast: statistics in float32 whatever the device's half kernel does
        y = F.group_norm(xc.to(dt), groups, cast(weight, dt), cast(bias, dt), eps).to(x.dtype)
    return y.movedim(1, -1) if moved else y


class GroupNorm(nn.Module):
    """GroupNorm: per sample, normalize each group of ``C / num_groups`` channels over positions x channels.

    ``y = (x - mean_g) / sqrt(var_g + eps) * weight + bias`` with biased variance over (positions, group
    channels), per-channel affine (``affine=True``: weight 1, bias 0), ``eps=1e-5``, ``num_groups=32``
    as torch.nn.GroupNorm. Input ``(N, *positions, C)``, or ``(N, C, *spatial)`` with
    ``layout="channels_first"`` (then it equals torch.nn.GroupNorm). ``num_groups=1`` normalizes over
    channels and positions together (PoolFormer's norm). Runs on torch's fused kernel (fp32 statistics
    for half inputs).

    Wu & He 2018, "Group Normalization".
    """

    description = "GroupNorm: per-sample mean/variance over positions within each channel group"
    paper = "Wu & He 2018, Group Normalization"

    def __init__(
        self,
        num_features: int,
        num_groups: int = 32,
        eps: float = 1e-5,
        affine: bool = True,
        layout: str = "channels_last",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if num_groups < 1 or num_features % num_groups:
            valid = [g for g in range(1, num_features + 1) if num_features % g == 0]
            raise ValueError(
                f"groupnorm num_groups={num_groups} does not divide num_features={num_features}; "
                f"choose num_groups from {valid}"
            )
        self.num_features, self.num_groups, self.eps = int(num_features), int(num_groups), float(eps)
        self.layout = check_layout(layout)
        self.affine = affine
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.ones(self.num_features, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(self.num_features, **factory)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` of shape ``(N, *positions, C)`` (or ``(N, C, *spatial)`` channels-first)."""
        check_features(x, self.num_features, "groupnorm", dim=1 if self.layout == "channels_first" else -1)
        if fast.on(self) and self.layout == "channels_last" and x.ndim > 2:
            return _fast_group_norm(self, x, self.num_groups)
        return _group_norm(x, self.num_groups, self.weight, self.bias, self.eps, self.layout == "channels_first")

    def extra_repr(self) -> str:
        """``num_features, num_groups=..., eps=..., affine=..., layout=...`` for ``print(model)``."""
        return f"{self.num_features}, num_groups={self.num_groups}, eps={self.eps}, affine={self.affine}, layout={self.layout}"


class InstanceNorm(nn.Module):
    """InstanceNorm: per sample and per channel, normalize over positions (GroupNorm with C groups).

    ``y = (x - mean_{n,c}) / sqrt(var_{n,c} + eps) * weight + bias``, biased variance over positions,
    ``eps=1e-5``, ``affine=False`` as torch.nn.InstanceNorm2d. Needs positions: input
    ``(N, *positions, C)`` with at least one position dim (or ``(N, C, *spatial)`` with
    ``layout="channels_first"``). Keeps no running statistics: train and eval compute the same thing
    (``track_running_stats=True`` is not supported; use batchnorm for running estimates).

    Ulyanov, Vedaldi & Lempitsky 2016, "Instance Normalization: The Missing Ingredient for Fast Stylization".
    """

    description = "InstanceNorm: per-sample, per-channel mean/variance over positions (no running stats)"
    paper = "Ulyanov et al. 2016, Instance Normalization: The Missing Ingredient for Fast Stylization"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        affine: bool = False,
        track_running_stats: bool = False,
        layout: str = "channels_last",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if track_running_stats:
            raise ValueError(
                "instancenorm keeps no running statistics (track_running_stats=True is not supported); "
                "it normalizes every sample by its own statistics in train and eval alike"
            )
        self.num_features, self.eps, self.affine = int(num_features), float(eps), affine
        self.layout = check_layout(layout)
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.ones(self.num_features, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(self.num_features, **factory)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` of shape ``(N, *positions, C)`` (or ``(N, C, *spatial)`` channels-first)."""
        if x.ndim < 3:
            raise ValueError(
                f"instancenorm needs position dims: (N, *positions, C) or (N, C, *spatial); got shape "
                f"{tuple(x.shape)}. For a (N, C) input there is nothing to normalize over per channel"
            )
        check_features(x, self.num_features, "instancenorm", dim=1 if self.layout == "channels_first" else -1)
        if fast.on(self) and self.layout == "channels_last":
            return _fast_group_norm(self, x, self.num_features)
        return _group_norm(x, self.num_features, self.weight, self.bias, self.eps, self.layout == "channels_first")

    def extra_repr(self) -> str:
        """``num_features, eps=..., affine=..., layout=...`` for ``print(model)``."""
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}, layout={self.layout}"
