"""Unified Normalization (UN; Yang et al., ACM MM 2022, "Unified Normalization for Accelerating and
Stabilizing Transformers").

Per channel over batch and tokens, the second moment ``x2 = mean(x^2)`` (no mean subtraction) is the
statistic. At training iteration ``t`` (counted from 1, once per training forward call):

- outlier filtration (only with ``outlier_filtration`` and ``t >= warmup_iters``): before inserting
  ``x2`` into the window, ``recorded = var(sqrt(buffer_x2))`` (unbiased, all entries); insert ``x2``
  at slot ``t % window``; if any channel has ``AM - GM > recorded * window`` (arithmetic vs geometric
  mean of the window) the batch is an outlier: its slot is overwritten with ``running_var`` and the
  current ``x2`` is used (``skip``);
- fluctuation smoothing: ``var = x2`` while ``t <= window``, ``t < warmup_iters`` or on skip; else
  ``var`` = the *geometric* mean of the window (the last ``window`` iterations incl. the current);
- ``z = x / sqrt(var + eps)``, ``running_var = momentum * running_var + (1 - momentum) * var``
  (``momentum`` weighs the OLD value, unlike torch's BatchNorm), ``y = weight * z + bias``.

Backward (gradient compensation, approximate by design):
``r = sqrt(var + eps) / sqrt(running_var + eps)`` (the running value before this step's update)
clamped to [1/5, 5], forced to 1 while ``t <= max(ratio_warmup_iters, warmup_iters)`` or on skip
(``ratio_warmup_iters`` is the reference's hard-coded 1000);
``g = dy * weight * r``; ``gz = mean(g * z)``; ``mean_gz`` = window mean of ``gz`` once past warmup
and the window, else ``gz``; ``ema_gz = momentum * ema_gz + (1 - momentum) * mean_gz``;
``dx = (g - ema_gz * z) / sqrt(var + eps)`` (``mean_gz`` instead of ``ema_gz`` on skip);
``dweight = sum(dy * r * z)``.

Eval: ``y = weight * x / sqrt(running_var + eps) + bias``, which folds into a neighbouring linear.

Schedule: the reference counts both warmups in training iterations of long runs (its NMT recipe:
``un_warmup=4000`` with a 6000-update LR warmup of 100,000 updates; 1000 is 1% of that run), so in a run
of a few hundred steps neither would ever end. When the build context knows the schedule (in training
forward calls), ``warmup_iters`` defaults to the run's LR warmup (``warmup_steps``, as PowerNorm's fairseq
recipe, on which UN builds) and ``ratio_warmup_iters`` to 1% of the run (``total_steps / 100``); without
it they fall back to the reference's 4000 and 1000. Explicit values always win.

Padding tokens (``mask`` False) are left out of ``x2`` and of ``mean(g * z)`` (the reference code
averages ``g * z`` over padded positions too; here a padded token never enters a statistic).
Under data parallelism both statistics are summed over ranks (``sync_stats``).
"""

from __future__ import annotations

import torch
from torch import nn

from normlight import distributed
from normlight.norms import _batchstats as bs
from normlight.norms import _fast_batch, fast


def geometric_mean(buf: torch.Tensor) -> torch.Tensor:
    """Per-channel geometric mean over the window dim 0 (through logs, for stability)."""
    return torch.exp(torch.log(buf).mean(0))


def window_step(un: UnifiedNorm, x2: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """UN's forward logic at training iteration ``t`` on the batch statistic ``x2`` (module docstring).

    Outlier filtration, fluctuation smoothing and the compensation ratio, shared by the reference Function and
    the fast path: updates ``buffer_x2``, ``skip_counter`` and ``running_var``; returns ``(var, r, skip)`` in
    the buffers' dtype (``r`` is computed from ``running_var`` before its update).
    """
    fp, rv = un.window[0], un.running_var
    skip = fp <= 1
    recorded = torch.var(torch.sqrt(un.buffer_x2))
    un.buffer_x2[t % fp] = x2
    if un.outlier_filtration and t >= un.warmup_iters:
        diff = un.buffer_x2.mean(0) - geometric_mean(un.buffer_x2)
        if bool((diff > recorded * fp).any()):
            un.buffer_x2[t % fp] = rv
            skip = True
            un.skip_counter.add_(1)
    var = x2 if (t <= fp or t < un.warmup_iters or skip) else geometric_mean(un.buffer_x2)
    r = torch.sqrt(var + un.eps) / torch.sqrt(rv + un.eps)
    r = torch.ones_like(r) if (t <= max(un.ratio_warmup_iters, un.warmup_iters) or skip) else r.clamp(1 / 5, 5)
    rv.mul_(un.momentum).add_(var, alpha=1 - un.momentum)
    return var, r, skip


class UNFunction(torch.autograd.Function):
    """UN's training step on rows ``(M, C)``; ``un`` is the module whose buffers it reads and updates."""

    @staticmethod
    def forward(ctx, x, weight, bias, real, un, t, sync):
        """Forward statistics, window and running updates (module docstring); returns ``weight * z + bias``."""
        n, x2 = bs.quadratic_mean("unifiednorm", x if real is None else x[real], sync)
        x2 = x2.to(un.buffer_x2.dtype)
        var, r, skip = window_step(un, x2, t)
        var, r = var.to(x.dtype), r.to(x.dtype)
        z = x * torch.rsqrt(var + un.eps)
        ctx.save_for_backward(z, var, weight, r, real)
        ctx.un, ctx.t, ctx.sync, ctx.skip, ctx.n = un, t, sync, skip, n
        un.batch_stat = x2.detach().float()
        return z * weight + bias

    @staticmethod
    def backward(ctx, dy):
        """Gradient compensation (module docstring); updates ``buffer_gz`` and ``ema_gz``."""
        z, var, weight, r, real = ctx.saved_tensors
        un, t, skip = ctx.un, ctx.t, ctx.skip
        bp, m = un.window[1], un.momentum
        g = dy * weight * r
        gz = (g * z if real is None else (g * z)[real]).sum(0)
        if ctx.sync:
            distributed.all_reduce_sum_(gz)
        gz = (gz / ctx.n).to(un.ema_gz.dtype)
        un.buffer_gz[t % bp] = un.ema_gz if skip else gz
        smooth = not (t <= bp or t < un.warmup_iters or skip)
        mean_gz = un.buffer_gz.mean(0) if smooth else gz
        un.ema_gz.mul_(m).add_(mean_gz, alpha=1 - m)
        comp = mean_gz if skip else un.ema_gz
        dx = (g - comp.to(z.dtype) * z) * torch.rsqrt(var + un.eps)
        return dx, (dy * r * z).sum(0), dy.sum(0), None, None, None, None


class UnifiedNorm(nn.Module):
    """UN with options ``window_size`` (int or (forward, backward) pair), ``warmup_iters``,
    ``outlier_filtration``, ``eps``, ``momentum`` (weight on the old value), ``sync_stats``,
    ``ratio_warmup_iters`` (the gradient-compensation ratio is 1 until then; see the module docstring).

    ``batch_stat`` is the batch second moment ``x2`` of the last training forward, ``running_stat``
    the running variance used in eval.
    """

    uses_batch_statistics = True
    description = "Unified Norm: second-moment batch statistic, geometric-mean window smoothing, gradient compensation"
    paper = "Yang et al. 2022, Unified Normalization for Accelerating and Stabilizing Transformers"

    def __init__(
        self,
        num_features: int,
        window_size: int | tuple[int, int] = 4,
        warmup_iters: int | None = None,
        outlier_filtration: bool = False,
        eps: float = 1e-5,
        momentum: float = 0.9,
        sync_stats: bool = True,
        ratio_warmup_iters: int | None = None,
        warmup_steps: int | None = None,
        total_steps: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if warmup_iters is None:  # the run's LR warmup when known, else the reference default
            warmup_iters = warmup_steps if warmup_steps is not None else 4000
        if ratio_warmup_iters is None:  # the reference's 1000 is 1% of its 100k-update NMT run
            ratio_warmup_iters = max(1, round(total_steps / 100)) if total_steps is not None else 1000
        if warmup_iters < 0 or ratio_warmup_iters < 0:
            raise ValueError(
                f"unifiednorm: warmup_iters and ratio_warmup_iters must be >= 0, "
                f"got {warmup_iters}, {ratio_warmup_iters}"
            )
        window = (window_size, window_size) if isinstance(window_size, int) else tuple(window_size)
        if len(window) != 2 or min(window) < 1:
            raise ValueError(
                f"unifiednorm: window_size must be a positive int or a (forward, backward) pair, got {window_size!r}"
            )
        kw = dict(device=device, dtype=dtype)
        self.num_features, self.window, self.warmup_iters = num_features, window, warmup_iters
        self.ratio_warmup_iters = ratio_warmup_iters
        self.outlier_filtration, self.eps, self.momentum, self.sync_stats = (
            outlier_filtration,
            eps,
            momentum,
            sync_stats,
        )
        self.weight = nn.Parameter(torch.ones(num_features, **kw))
        self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        self.register_buffer("running_var", torch.ones(num_features, **kw))
        self.register_buffer("ema_gz", torch.zeros(num_features, **kw))
        self.register_buffer("buffer_x2", torch.zeros(window[0], num_features, **kw))
        self.register_buffer("buffer_gz", torch.zeros(window[1], num_features, **kw))
        self.register_buffer("iters", torch.tensor(0, dtype=torch.long, device=device))
        self.register_buffer("skip_counter", torch.tensor(0, dtype=torch.long, device=device))
        self.batch_stat: torch.Tensor | None = None

    @property
    def running_stat(self) -> torch.Tensor:
        """The running variance used in eval."""
        return self.running_var

    def resolved_options(self) -> dict:
        """The options derived from the build context (the schedule), for the run record."""
        return {"warmup_iters": self.warmup_iters, "ratio_warmup_iters": self.ratio_warmup_iters}

    def extra_repr(self) -> str:
        """Options shown in ``print(module)``."""
        return (
            f"{self.num_features}, window={self.window}, warmup_iters={self.warmup_iters}, "
            f"ratio_warmup_iters={self.ratio_warmup_iters}, "
            f"outlier_filtration={self.outlier_filtration}, eps={self.eps}, momentum={self.momentum}"
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalize ``(..., C)``; ``mask`` (``x.shape[:-1]``, True = real) keeps padding out of the statistics."""
        mask = bs.check_input("unifiednorm", x, self.num_features, mask)
        cdt = bs.stat_dtype(x)
        w, b = self.weight.to(cdt), self.bias.to(cdt)
        if not self.training and fast.on(self):
            x2 = x.to(cdt).reshape(-1, self.num_features)
            scale = torch.rsqrt(self.running_var.to(cdt) + self.eps) * w
            return _fast_batch.affine_rows(x2, scale, b, compiled=fast.compiled(self)).reshape(x.shape).to(x.dtype)
        if not self.training:
            return (x.to(cdt) * torch.rsqrt(self.running_var.to(cdt) + self.eps) * w + b).to(x.dtype)
        self.iters.add_(1)
        real = None if mask is None else mask.reshape(-1)
        if fast.on(self):
            return self._fast(x.to(cdt).reshape(-1, self.num_features), w, b, real).reshape(x.shape).to(x.dtype)
        y = UNFunction.apply(
            x.to(cdt).reshape(-1, self.num_features),
            w,
            b,
            real,
            self,
            int(self.iters),
            distributed.sync_active(self.sync_stats, True),
        )
        return y.reshape(x.shape).to(x.dtype)

    def _fast(self, x2: torch.Tensor, w: torch.Tensor, b: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
        # the statistic on the fast kernels, the shared window logic, then the fast step Function
        t, sync = int(self.iters), distributed.sync_active(self.sync_stats, True)
        n = _fast_batch.row_count("unifiednorm", x2, real, sync, minimum=1)
        wr = None if real is None else real.to(x2.dtype)
        x2_stat = _fast_batch.synced(_fast_batch.quad_mean(x2, wr, 1, compiled=fast.compiled(self)), sync) / n
        with torch.no_grad():
            x2_stat = x2_stat.to(self.buffer_x2.dtype)
            var, r, skip = window_step(self, x2_stat, t)
            var, r = var.to(x2.dtype), r.to(x2.dtype)
        y = _fast_batch.un_step(x2, w, b, var, r, real, self, t, n, sync, skip, fast.compiled(self))
        self.batch_stat = x2_stat.detach().float()
        return y
