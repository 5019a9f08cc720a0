"""Shared helpers of the batch-statistic norms: input checks, masked rows, per-channel moments.

Convention: an input ``(..., C)`` has the batch in dim 0, features in the last dim and positions
(tokens or spatial) in between; a batch statistic is taken per channel over every other dim.
A padding ``mask`` of shape ``x.shape[:-1]`` (True = real token) drops padded rows from the
statistics only; the norms still normalize padded positions. Statistics are computed in float32 for
half-precision inputs (``stat_dtype``), optionally summed over data-parallel ranks (``normlight.distributed``).
"""

from __future__ import annotations

import torch

from normlight import distributed

MICRO_BATCH_HINT = (
    "use a larger batch, or a norm meant for micro-batches such as groupnorm, bcn "
    "(batch-channel norm), evonorm_s0, or a normalization-free (nf) model"
)


def micro_batch_hint(name: str) -> str:
    """The micro-batch advice without suggesting the norm that just failed (bcn's BN stage reports as bcn)."""
    if name.split()[0].startswith("bcn"):
        return "use a larger batch, or groupnorm with weight standardization, evonorm_s0, or a normalization-free (nf) model"
    return MICRO_BATCH_HINT


def stat_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype statistics are computed in: float32 for half inputs, else the input's dtype."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def check_input(
    name: str, x: torch.Tensor, num_features: int, mask: torch.Tensor | None, channels_first: bool = False
) -> torch.Tensor | None:
    """Validate the feature dim and the mask shape; return the mask as bool (or None).

    The mask shape is the input shape without the feature dim: ``x.shape[:-1]`` for channels-last,
    ``(N, *spatial)`` for channels-first inputs.
    """
    cdim = 1 if channels_first else -1
    if x.ndim < 2 or x.shape[cdim] != num_features:
        where = "(N, C, *spatial)" if channels_first else "(..., C)"
        raise ValueError(f"{name}: expected an input of shape {where} with C={num_features}, got {tuple(x.shape)}")
    if mask is None:
        return None
    want = x.shape[:1] + x.shape[2:] if channels_first else x.shape[:-1]
    if tuple(mask.shape) != tuple(want):
        raise ValueError(
            f"{name}: mask must have the input's shape without the feature dim, {tuple(want)}, "
            f"got {tuple(mask.shape)} (True marks real tokens)"
        )
    return mask.to(device=x.device, dtype=torch.bool)


def rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The ``(M, C)`` rows of a channels-last input that enter the statistics (real tokens only)."""
    flat = x.reshape(-1, x.shape[-1])
    return flat if mask is None else flat[mask.reshape(-1)]


def require_values(name: str, n: int) -> None:
    """Clear error when a channel has fewer than two values to take batch statistics from."""
    if n <= 1:
        raise ValueError(
            f"{name}: training needs more than 1 value per channel to compute batch statistics, "
            f"got {n} (e.g. batch size 1 without positions, or a mask with <= 1 real token); " + micro_batch_hint(name)
        )


def moments(name: str, r: torch.Tensor, sync: bool) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``(n, mean, biased var)`` per channel of rows ``r`` (M, C); summed over ranks when ``sync``.

    Two passes (mean first, then squared deviations) so the synced result matches one process on
    the full batch to float rounding; both passes are differentiable through the all-reduce.
    """
    if not sync:
        require_values(name, r.shape[0])
        var, mean = torch.var_mean(r, dim=0, correction=0)
        return r.shape[0], mean, var
    total = distributed.all_reduce_sum(torch.cat([r.sum(0), r.new_tensor([r.shape[0]])]))
    n = int(total[-1].item())
    require_values(name, n)
    mean = total[:-1] / n
    var = distributed.all_reduce_sum(((r - mean) ** 2).sum(0)) / n
    return n, mean, var


def quadratic_mean(name: str, r: torch.Tensor, sync: bool) -> tuple[int, torch.Tensor]:
    """``(n, mean(x^2))`` per channel of rows ``r`` (no mean subtraction); summed over ranks when ``sync``.

    Not differentiable through the all-reduce: callers use it inside custom autograd Functions.
    """
    total = torch.cat([(r * r).sum(0), r.new_tensor([r.shape[0]])])
    if sync:
        distributed.all_reduce_sum_(total)
    n = int(total[-1].item())
    if n < 1:
        raise ValueError(f"{name}: no real token in the batch to compute statistics from (all masked out)")
    return n, total[:-1] / n


def update_running(buf: torch.Tensor, stat: torch.Tensor, momentum: float) -> None:
    """``buf = (1 - momentum) * buf + momentum * stat`` in place, as torch's BatchNorm does."""
    with torch.no_grad():
        buf.mul_(1.0 - momentum).add_(stat.detach().to(buf.dtype), alpha=momentum)


def group_moments(x: torch.Tensor, groups: int, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (sample, channel group) ``(mean, biased var)`` over positions and the group's channels.

    ``x`` is channels-last ``(N, *positions, C)``; results have shape ``(N, 1, groups, 1)`` for the
    view ``x.reshape(N, -1, groups, C // groups)``. ``groups=C`` gives instance statistics. Padded
    positions (``mask`` False) are left out.
    """
    g = x.reshape(x.shape[0], -1, groups, x.shape[-1] // groups)
    if mask is None:
        var, mean = torch.var_mean(g, dim=(1, 3), keepdim=True, correction=0)
        return mean, var
    w = mask.reshape(x.shape[0], -1, 1, 1).to(x.dtype)
    count = w.sum(1, keepdim=True).clamp_min(1) * g.shape[-1]
    mean = (g * w).sum((1, 3), keepdim=True) / count
    var = ((g - mean) ** 2 * w).sum((1, 3), keepdim=True) / count
    return mean, var


class InnerBatchStats:
    """Mixin: ``batch_stat`` / ``running_stat`` of a norm whose batch statistics live in an inner
    batch-statistic module, named by the class attribute ``stats_module`` (``"bn"`` by default)."""

    stats_module = "bn"

    @property
    def batch_stat(self) -> torch.Tensor | None:
        """Batch variance of the inner norm's last training forward."""
        return getattr(self, self.stats_module).batch_stat

    @property
    def running_stat(self) -> torch.Tensor | None:
        """Running variance of the inner norm (what eval normalizes with)."""
        return getattr(self, self.stats_module).running_stat
