"""BatchNorm over every non-feature dim, for tokens ``(B, T, C)`` and CNN maps alike.

Training normalizes each channel with the batch mean and *biased* variance taken over all dims but
the feature dim (batch and positions) and updates running estimates with the *unbiased* variance,
exactly as ``torch.nn.BatchNorm{1,2,3}d``; eval uses the running estimates. With
``layout="channels_first"`` an ``(N, C, *spatial)`` map is taken directly and the result equals
``torch.nn.BatchNorm2d``. A padding ``mask`` (True = real token) keeps padded tokens out of the
statistics. Statistics are summed across data-parallel ranks unless ``sync_stats=False`` (see
``normlight.distributed``). Half inputs are normalized with float32 statistics.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from normlight import distributed
from normlight.norms import _batchstats as bs
from normlight.norms import _fast_batch, fast

# a warning raised in this folder is shown at the first frame outside it and outside torch's Module call
_SKIP = (str(Path(__file__).parent), str(Path(nn.Module.__call__.__code__.co_filename)))


class BatchNorm(nn.Module):
    """Batch normalization with torch's options (``eps``, ``momentum``, ``affine``, ``track_running_stats``).

    ``momentum=None`` uses a cumulative average (``1 / num_batches_tracked``), as torch does.
    After each training forward ``batch_stat`` holds the (biased) batch variance it normalized with
    and ``running_stat`` is the running variance used in eval.
    """

    uses_batch_statistics = True
    label = "batchnorm"  # names the norm in errors and warnings (bcn relabels its BatchNorm stage)
    description = "BatchNorm: per-channel batch mean/variance over batch and positions; running estimates in eval"
    paper = "Ioffe & Szegedy 2015, Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        sync_stats: bool = True,
        layout: str | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if layout not in (None, "channels_last", "channels_first"):
            raise ValueError(f"batchnorm: layout must be 'channels_last' or 'channels_first', got {layout!r}")
        kw = dict(device=device, dtype=dtype)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats, self.sync_stats = affine, track_running_stats, sync_stats
        self.channels_first = layout == "channels_first"
        self.weight = nn.Parameter(torch.ones(num_features, **kw)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features, **kw)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **kw))
            self.register_buffer("running_var", torch.ones(num_features, **kw))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self.batch_stat: torch.Tensor | None = None
        self._warned_one_sample = False

    @property
    def running_stat(self) -> torch.Tensor | None:
        """The running variance used in eval (None without ``track_running_stats``)."""
        return self.running_var

    def extra_repr(self) -> str:
        """Options shown in ``print(module)``."""
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}, sync_stats={self.sync_stats}, "
            f"layout={'channels_first' if self.channels_first else 'channels_last'}"
        )

    def _factor(self) -> float:
        # torch semantics: count batches, and momentum=None means a cumulative average
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalize ``x`` (``(..., C)``, or ``(N, C, *spatial)`` channels-first); ``mask`` drops padded tokens from the stats."""
        mask = bs.check_input(self.label, x, self.num_features, mask, self.channels_first)
        use_batch = self.training or not self.track_running_stats
        sync = distributed.sync_active(self.sync_stats, self.training)
        cdt = bs.stat_dtype(x)
        if use_batch and not sync:
            self._warn_one_sample(x)
        ref = self.weight if self.weight is not None else self.running_var
        if use_batch and (mask is not None or sync) and fast.on(self):
            return self._fast_batch(x, mask, sync).to(x.dtype)
        if (not use_batch or (mask is None and not sync)) and (ref is None or ref.dtype == cdt):
            y = self._fused(x.to(cdt), use_batch)
        else:
            xl = x.movedim(1, -1) if self.channels_first else x
            y = self._general(xl.to(cdt), mask, use_batch, sync)
            y = y.movedim(-1, 1) if self.channels_first else y
        return y.to(x.dtype)

    def _warn_one_sample(self, x: torch.Tensor) -> None:
        if x.shape[0] == 1 and x.numel() > self.num_features and not self._warned_one_sample:
            # the user's line is a varying depth above (BatchNorm directly, or a stage of RepBN / BCN)
            frame, level = sys._getframe(0), 1  # this frame is warnings.warn's level 1
            while frame is not None and frame.f_code.co_filename.startswith(_SKIP):
                frame, level = frame.f_back, level + 1
            warnings.warn(
                f"{self.label}: training with batch size 1; the batch statistics come from one sample's "
                "positions and are noisy (" + bs.MICRO_BATCH_HINT + ")",
                stacklevel=level,
            )
            self._warned_one_sample = True

    def _fast_batch(self, x, mask, sync, weight=None, bias=None, alpha=None) -> torch.Tensor:
        # fast path with batch statistics (mask / sync; RepBN and PRepBN for every input): one
        # state-aware Function; ``weight``/``bias`` override this module's (PRepBN scales them)
        if not sync:
            self._warn_one_sample(x)
        cdt = bs.stat_dtype(x)
        xl = (x.movedim(1, -1) if self.channels_first else x).to(cdt)
        x2, real = xl.reshape(-1, self.num_features), None if mask is None else mask.reshape(-1)
        w = self.weight if weight is None else weight
        b = self.bias if bias is None else bias
        w, b, a = (None if t is None else t.to(cdt) for t in (w, b, alpha))
        track = self.training and self.track_running_stats
        if mask is None and not sync and (not track or self.running_var.dtype == cdt):  # torch's fused kernels
            bs.require_values(self.label, x2.shape[0])
            factor = self._factor() if track else 0.0
            running = (self.running_mean, self.running_var) if track else (None, None)
            y, _, invstd = _fast_batch.native_batch_affine(x2, w, b, a, *running, factor, self.eps)
            if self.training:
                self.batch_stat = (invstd.detach().float() ** -2 - self.eps).clamp_min(0)  # biased batch variance
        else:
            n = _fast_batch.row_count(self.label, x2, real, sync)
            y, mean, var = _fast_batch.batch_affine(x2, w, b, a, real, n, sync, self.eps, fast.compiled(self))
            if self.training:
                self.batch_stat = var.detach().float()
                if self.track_running_stats:
                    factor = self._factor()
                    bs.update_running(self.running_mean, mean, factor)
                    bs.update_running(self.running_var, var * (n / (n - 1)), factor)
        y = y.reshape(xl.shape)
        return y.movedim(-1, 1) if self.channels_first else y

    def _fused(self, x: torch.Tensor, use_batch: bool) -> torch.Tensor:
        # torch's fused kernel: eval, or batch statistics without mask and without sync
        xin = x if self.channels_first else x.reshape(-1, self.num_features)
        if not use_batch:
            return F.batch_norm(
                xin, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            ).reshape(x.shape)
        bs.require_values(self.label, x.numel() // self.num_features)
        factor = self._factor() if self.training and self.track_running_stats else 0.0
        running = (self.running_mean, self.running_var) if self.training and self.track_running_stats else (None, None)
        y, _, invstd = torch.native_batch_norm(xin, self.weight, self.bias, *running, True, factor, self.eps)
        if self.training:
            self.batch_stat = (invstd.detach().float() ** -2 - self.eps).clamp_min(0)  # biased batch variance
        return y if self.channels_first else y.reshape(x.shape)

    def _general(self, x: torch.Tensor, mask: torch.Tensor | None, use_batch: bool, sync: bool) -> torch.Tensor:
        # channels-last: statistics over real rows (masked), optionally summed over ranks
        if use_batch:
            n, mean, var = bs.moments(self.label, bs.rows(x, mask), sync)
            if self.training:
                self.batch_stat = var.detach().float()
                if self.track_running_stats:
                    factor = self._factor()
                    bs.update_running(self.running_mean, mean, factor)
                    bs.update_running(self.running_var, var * (n / (n - 1)), factor)
        else:
            mean, var = self.running_mean.to(x.dtype), self.running_var.to(x.dtype)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.to(x.dtype)
        y = (x - mean) * scale
        return y + self.bias.to(x.dtype) if self.bias is not None else y
