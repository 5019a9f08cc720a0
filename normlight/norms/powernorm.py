"""PowerNorm (Shen et al. 2020, "PowerNorm: Rethinking Batch Normalization in Transformers").

Per token, GroupScaling first divides each channel group by its root-mean-square. Then, per channel
over the batch and tokens, the quadratic mean ``psi2 = mean(x^2)`` (no mean subtraction) is the
statistic. During warmup (iteration ``t <= warmup_iters``) the batch ``psi2`` normalizes; afterwards
the running estimate ``running_phi`` does, also in training. The backward is the paper's
*approximate* gradient, not the true one:

    g     = dy * weight
    g_hat = g - (1 - alpha_bkw) * ema_gz * z
    ema_gz += mean_tokens(g_hat * z)                 (per channel, accumulated)
    dx    = g_hat / sqrt(psi2 + eps)                  (the BATCH psi2, even after warmup)

Eval: ``y = weight * x / sqrt(running_phi + eps) + bias`` (after GroupScaling).

Defaults follow the paper's fairseq recipe, which builds every PowerNorm as
``MaskPowerNorm(dim, group_num=head_num, warmup_iters=warmup_updates)`` (``norm_select.py``): when the
build context knows them, ``warmup_iters`` = the run's learning-rate warmup (the ``warmup_steps``
context, in training forward calls) and ``group_num`` = the number of attention heads (``num_heads``
context; 1 at the per-head ``qk`` site or when the heads do not divide the features). Without that
context they fall back to the reference class defaults, ``warmup_iters=10000`` and ``group_num=1``;
explicit values always win. The iteration counter counts *training forward calls*, so gradient
accumulation advances it once per micro-batch. Padded tokens (``mask`` False) are left out of
``psi2`` and of ``mean_tokens(g_hat * z)`` (the reference code averages the latter over padded
positions too; here a padded token never enters a statistic). Under data parallelism ``psi2`` and the backward
statistic ``mean(g_hat * z)`` are summed over ranks (``sync_stats``), so ``ema_gz`` stays identical.
"""

from __future__ import annotations

import torch
from torch import nn

from normlight import distributed
from normlight.norms import _batchstats as bs
from normlight.norms import _fast_batch, fast


def group_scaling(x: torch.Tensor, group_num: int, eps: float = 1e-5) -> torch.Tensor:
    """GroupScaling1D: per token, divide each of ``group_num`` channel groups by sqrt(mean(x^2) + eps)."""
    g = x.reshape(*x.shape[:-1], group_num, x.shape[-1] // group_num)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    return g.reshape(x.shape)


class PowerFunction(torch.autograd.Function):
    """PowerNorm's training step on rows ``(M, C)``: forward statistics and the approximate backward.

    Mutates the buffers it is given: ``running_phi`` in forward, ``ema_gz`` in backward.
    ``state`` is a dict of settings; it receives ``psi2`` (the batch quadratic mean) for diagnostics.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_phi, ema_gz, real, state):
        """``real`` is a bool row mask (True = real token) or None; see the class docstring."""
        eps, t = state["eps"], state["t"]
        n, psi2 = bs.quadratic_mean(state["name"], x if real is None else x[real], state["sync"])
        phi = psi2 if t <= state["warmup_iters"] else running_phi.to(x.dtype)
        z = x * torch.rsqrt(phi + eps)
        with torch.no_grad():
            if t < state["warmup_iters"]:  # cumulative mean during warmup, then the EMA (both run)
                running_phi.mul_((t - 1) / t).add_(psi2.to(running_phi.dtype) / t)
            a = state["alpha_fwd"]
            running_phi.mul_(a).add_(psi2.to(running_phi.dtype), alpha=1 - a)
        ctx.save_for_backward(z, psi2, weight, real)
        ctx.ema_gz, ctx.n, ctx.state = ema_gz, n, state
        state["psi2"] = psi2
        return z * weight + bias

    @staticmethod
    def backward(ctx, dy):
        """The paper's approximate gradient (see the module docstring); updates ``ema_gz``."""
        z, psi2, weight, real = ctx.saved_tensors
        ema_gz, state = ctx.ema_gz, ctx.state
        g_hat = dy * weight - (1 - state["alpha_bkw"]) * ema_gz.to(z.dtype) * z
        gz = (g_hat * z if real is None else (g_hat * z)[real]).sum(0)
        if state["sync"]:
            distributed.all_reduce_sum_(gz)
        ema_gz.add_((gz / ctx.n).to(ema_gz.dtype))
        dx = g_hat * torch.rsqrt(psi2 + state["eps"])
        return dx, (dy * z).sum(0), dy.sum(0), None, None, None, None


class PowerNorm(nn.Module):
    """PowerNorm with GroupScaling (options ``group_num``, ``warmup_iters``, ``alpha_fwd``, ``alpha_bkw``, ``eps``).

    After each training forward ``batch_stat`` is the batch quadratic mean ``psi2`` and
    ``running_stat`` the running estimate ``running_phi`` used in eval (and after warmup).
    """

    uses_batch_statistics = True
    description = "PowerNorm: quadratic-mean batch statistic, running estimate after warmup, approximate backward"
    paper = "Shen et al. 2020, PowerNorm: Rethinking Batch Normalization in Transformers"

    def __init__(
        self,
        num_features: int,
        group_num: int | None = None,
        warmup_iters: int | None = None,
        alpha_fwd: float = 0.9,
        alpha_bkw: float = 0.9,
        eps: float = 1e-5,
        sync_stats: bool = True,
        num_heads: int | None = None,
        warmup_steps: int | None = None,
        site: str | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if group_num is None:  # fairseq recipe: one group per attention head (not inside a head)
            heads_fit = num_heads is not None and site != "qk" and num_features % num_heads == 0
            group_num = num_heads if heads_fit else 1
        if warmup_iters is None:  # fairseq recipe: the LR warmup; else the reference class default
            warmup_iters = warmup_steps if warmup_steps is not None else 10000
        if warmup_iters < 0:
            raise ValueError(f"powernorm: warmup_iters must be >= 0, got {warmup_iters}")
        if group_num < 1 or num_features % group_num:
            raise ValueError(
                f"powernorm: group_num={group_num} must be a positive divisor of num_features={num_features}"
            )
        kw = dict(device=device, dtype=dtype)
        self.num_features, self.group_num, self.warmup_iters = num_features, group_num, warmup_iters
        self.alpha_fwd, self.alpha_bkw, self.eps, self.sync_stats = alpha_fwd, alpha_bkw, eps, sync_stats
        self.weight = nn.Parameter(torch.ones(num_features, **kw))
        self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        self.register_buffer("running_phi", torch.ones(num_features, **kw))
        self.register_buffer("ema_gz", torch.zeros(num_features, **kw))
        self.register_buffer("iters", torch.tensor(0, dtype=torch.long, device=device))
        self.batch_stat: torch.Tensor | None = None

    @property
    def running_stat(self) -> torch.Tensor:
        """The running quadratic mean ``running_phi`` used in eval."""
        return self.running_phi

    def resolved_options(self) -> dict:
        """The options derived from the build context (heads, LR warmup), for the run record."""
        return {"group_num": self.group_num, "warmup_iters": self.warmup_iters}

    def extra_repr(self) -> str:
        """Options shown in ``print(module)``."""
        return (
            f"{self.num_features}, group_num={self.group_num}, warmup_iters={self.warmup_iters}, "
            f"alpha_fwd={self.alpha_fwd}, alpha_bkw={self.alpha_bkw}, eps={self.eps}, sync_stats={self.sync_stats}"
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalize ``(..., C)``; ``mask`` (``x.shape[:-1]``, True = real) keeps padding out of the statistics."""
        mask = bs.check_input("powernorm", x, self.num_features, mask)
        cdt = bs.stat_dtype(x)
        if fast.on(self):
            return self._fast(x.to(cdt).reshape(-1, self.num_features), mask).reshape(x.shape).to(x.dtype)
        xs = group_scaling(x.to(cdt), self.group_num)
        w, b = self.weight.to(cdt), self.bias.to(cdt)
        if not self.training:
            return (xs * torch.rsqrt(self.running_phi.to(cdt) + self.eps) * w + b).to(x.dtype)
        self.iters.add_(1)  # counted before the call, so t starts at 1
        state = dict(
            name="powernorm",
            eps=self.eps,
            t=int(self.iters),
            warmup_iters=self.warmup_iters,
            alpha_fwd=self.alpha_fwd,
            alpha_bkw=self.alpha_bkw,
            sync=distributed.sync_active(self.sync_stats, self.training),
        )
        real = None if mask is None else mask.reshape(-1)
        y = PowerFunction.apply(xs.reshape(-1, self.num_features), w, b, self.running_phi, self.ema_gz, real, state)
        self.batch_stat = state["psi2"].detach().float()
        return y.reshape(x.shape).to(x.dtype)

    def _fast(self, x2: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # GroupScaling and the PowerNorm step in one Function (see _fast_batch.PowerNormFunction)
        w, b, compiled = self.weight.to(x2.dtype), self.bias.to(x2.dtype), fast.compiled(self)
        if not self.training:
            rg = _fast_batch.group_rstd(x2, self.group_num, 1e-5, compiled=compiled)
            xs = _fast_batch.group_scale(x2, rg)
            scale = torch.rsqrt(self.running_phi.to(x2.dtype) + self.eps) * w
            return _fast_batch.affine_rows(xs, scale, b, compiled=compiled)
        self.iters.add_(1)
        sync = distributed.sync_active(self.sync_stats, True)
        real = None if mask is None else mask.reshape(-1)
        n = _fast_batch.row_count("powernorm", x2, real, sync, minimum=1)
        settings = (self.group_num, self.eps, self.warmup_iters, self.alpha_fwd, self.alpha_bkw, sync)
        y, psi2 = _fast_batch.power_norm(
            x2, w, b, self.running_phi, self.ema_gz, real, n, int(self.iters), settings, compiled
        )
        self.batch_stat = psi2.detach().float()
        return y
