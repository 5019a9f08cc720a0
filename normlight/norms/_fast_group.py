"""Fast paths of the per-sample norms on the tokens (channels-last) layout: GroupNorm / InstanceNorm, GRN, EvoNorm-S0.

Inputs are ``(N, L, C)`` (positions flattened, features last). Statistics per (sample, channel group)
are taken over positions and the group's channels without a channels-first copy:

- GroupNorm / InstanceNorm run torch's ``native_group_norm`` on a channels_last *view* of the input.
  That kernel takes the variance in one pass (``E[x^2] - E[x]^2``), which loses digits when
  ``|mean| / std`` is large (7e-2 at 200), so the input is first shifted by its exact per-group mean
  (one reduction pass): on centered data the one-pass variance is accurate, and a shift leaves
  GroupNorm's output unchanged. The backward is analytic (torch's channels_last backward kernel is
  slow on CPU, 11x a copy for 32 groups and 44x for instance norm).
- GRN and EvoNorm-S0 are written out as reductions over positions plus in-place elementwise passes.

Only the input and per-(sample, group) statistics are saved for backward.
"""

from __future__ import annotations

import torch

from normlight.norms._fast_batch import pair_sums
from normlight.norms.fast import kernel


def _per_channel(t: torch.Tensor, c: int) -> torch.Tensor:
    """``(N, G)`` per-group values repeated over each group's channels, as ``(N, 1, C)``."""
    n, g = t.shape
    return t.unsqueeze(-1).expand(n, g, c // g).reshape(n, 1, c)


def _group_sum(t: torch.Tensor, g: int) -> torch.Tensor:
    """``(N, C)`` per-channel values summed within each of ``g`` channel groups: ``(N, G)``."""
    return t.reshape(t.shape[0], g, -1).sum(-1)


def group_mean(x3: torch.Tensor, groups: int) -> torch.Tensor:
    """Exact per-(sample, group) mean of ``(N, L, C)``, shape ``(N, G)``."""
    n, l, c = x3.shape
    return _group_sum(x3.sum(1), groups) / (l * (c // groups))


def per_sample_sums(g3: torch.Tensor, x3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_L g * x, sum_L g)`` per (sample, channel) of two ``(N, L, C)`` tensors, each ``(N, C)``.

    Eagerly one fused BatchNorm-backward pass per sample (``_fast_batch.pair_sums``, no full-size
    temporary); inside a compiled graph the plain formula, which inductor fuses itself.
    """
    if torch.compiler.is_compiling():
        return (g3 * x3).sum(1), g3.sum(1)
    sums = [pair_sums(g, x) for g, x in zip(g3.unbind(0), x3.unbind(0))]
    return torch.stack([s for s, _ in sums]), torch.stack([t for _, t in sums])


# ------------------------------------------------------------------ GroupNorm / InstanceNorm
@kernel
def gn_fwd(x3, weight, bias, groups: int, eps: float):
    """``(y, mean, rstd)`` of GroupNorm on ``(N, L, C)``; mean and rstd per (sample, group)."""
    n, l, c = x3.shape
    shift = group_mean(x3, groups)
    xs = x3 - _per_channel(shift, c)
    view = xs.unsqueeze(2).permute(0, 3, 1, 2)  # (N, C, L, 1), channels_last strides: no copy
    y, mean, rstd = torch.native_group_norm(view, weight, bias, n, c, l, groups, eps)
    return y.permute(0, 2, 3, 1).reshape(n, l, c), shift + mean.reshape(n, groups), rstd.reshape(n, groups)


@kernel
def gn_bwd(dy3, x3, weight, mean, rstd, groups: int):
    """``(dx, dweight, dbias)``: the GroupNorm gradient from per-(sample, channel) sums over positions."""
    n, l, c = x3.shape
    count = l * (c // groups)
    b, a = per_sample_sums(dy3, x3)  # (N, C): sums over positions of dy * x and of dy
    mean_c, rstd_c = _per_channel(mean, c)[:, 0], _per_channel(rstd, c)[:, 0]
    dyxhat = rstd_c * (b - mean_c * a)  # (N, C): sum over positions of dy * xhat
    w = torch.ones_like(a[0]) if weight is None else weight
    s = _group_sum(a * w, groups)  # per group: sum of g = dy * w
    t = _group_sum(dyxhat * w, groups)  # per group: sum of g * xhat
    k2 = -rstd.square() * t / count
    k1 = -rstd * s / count - mean * k2
    dx = torch.addcmul(_per_channel(k1, c), x3, _per_channel(k2, c))
    dx.addcmul_(dy3, (rstd_c * w).unsqueeze(1))
    return dx, dyxhat.sum(0), a.sum(0)


class GroupNormFunction(torch.autograd.Function):
    """GroupNorm of a channels-last ``(N, L, C)`` input; saves the input and per-group mean / rstd."""

    @staticmethod
    def forward(ctx, x3, weight, bias, groups, eps, compiled):
        """Normalize per (sample, group) over positions and the group's channels."""
        # the forward stays on torch's group_norm kernel also in compiled mode: inductor's decomposition
        # of it on the channels_last view was 21x LayerNorm (benchmarks/norms.py); only the backward compiles
        y, mean, rstd = gn_fwd(x3, weight, bias, groups, eps)
        ctx.save_for_backward(x3, weight, mean, rstd)
        ctx.groups, ctx.compiled = groups, compiled
        return y

    @staticmethod
    def backward(ctx, dy):
        """Analytic gradient (see ``gn_bwd``)."""
        x3, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = gn_bwd(dy.contiguous(), x3, weight, mean, rstd, ctx.groups, compiled=ctx.compiled)
        need = ctx.needs_input_grad
        return dx, dw if need[1] else None, db if need[2] else None, None, None, None


def group_norm(x, groups: int, weight, bias, eps: float, compiled: bool) -> torch.Tensor:
    """Fast GroupNorm of a channels-last ``(N, *positions, C)`` input (``groups = C``: InstanceNorm)."""
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])
    return GroupNormFunction.apply(x3, weight, bias, groups, eps, compiled).reshape(x.shape)


# ------------------------------------------------------------------ GRN: y = gamma * (x * N) + beta + x
@kernel
def grn_fwd(x3, gamma, beta, eps: float):
    """``(y, g)``: ``g[n, c] = ||x[n, :, c]||``, ``N = g / (mean_c g + eps)``, ``y = x * (1 + gamma * N) + beta``."""
    g = (x3 * x3).sum(1).sqrt_()  # not vector_norm(dim=1): a strided reduction, ~9 copies on CPU
    nrm = g / (g.mean(-1, keepdim=True) + eps)
    return torch.addcmul(beta, x3, (1 + gamma * nrm).unsqueeze(1)), g


@kernel
def grn_bwd(dy3, x3, gamma, g, eps: float):
    """``(dx, dgamma, dbeta)`` of GRN through the per-channel norms ``g`` and their channel mean."""
    c = x3.shape[-1]
    den = g.mean(-1, keepdim=True) + eps
    nrm = g / den
    dx = dy3 * x3  # the one full-size temporary, reused for dx below
    p = dx.sum(1)  # (N, C): sum over positions of dy * x
    a = gamma * p  # dL/dN
    dg = a / den - (a * g).sum(-1, keepdim=True) / (c * den.square())
    coef = torch.where(g > 0, dg / g, torch.zeros_like(g))  # the norm's subgradient at 0 is 0, as torch's
    torch.mul(x3, coef.unsqueeze(1), out=dx)
    dx.addcmul_(dy3, (1 + gamma * nrm).unsqueeze(1))
    return dx, (nrm * p).sum(0), dy3.sum((0, 1))


class GRNFunction(torch.autograd.Function):
    """GRN on ``(N, L, C)``; saves the input and the per-(sample, channel) norms."""

    @staticmethod
    def forward(ctx, x3, gamma, beta, eps, compiled):
        """Global response normalization (see ``grn_fwd``)."""
        y, g = grn_fwd(x3, gamma, beta, eps, compiled=compiled)
        ctx.save_for_backward(x3, gamma, g)
        ctx.eps, ctx.compiled = eps, compiled
        return y

    @staticmethod
    def backward(ctx, dy):
        """Analytic gradient (see ``grn_bwd``)."""
        x3, gamma, g = ctx.saved_tensors
        dx, dgamma, dbeta = grn_bwd(dy.contiguous(), x3, gamma, g, ctx.eps, compiled=ctx.compiled)
        return dx, dgamma, dbeta, None, None  # gamma and beta are tensors; autograd drops a frozen one's gradient


def grn(x, gamma, beta, eps: float, compiled: bool) -> torch.Tensor:
    """Fast GRN of a channels-last ``(N, *positions, C)`` input."""
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])
    return GRNFunction.apply(x3, gamma, beta, eps, compiled).reshape(x.shape)


# ------------------------------------------------------------------ EvoNorm-S0: y = x * sigmoid(v x) * rstd_group * gamma + beta
def group_moments3(x3: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(sample, group) mean and biased variance of ``(N, L, C)``, each ``(N, G)``.

    Eagerly from torch's fused per-channel statistics kernel on each sample (one pass), combined over
    each group's channels by the law of total variance (``var_g = mean_c var_c + mean_c (mean_c -
    mean_g)^2``: no cancellation); inside a compiled graph or off CPU two plain passes (mean, centered squares).
    """
    n, l, c = x3.shape
    if torch.compiler.is_compiling() or x3.device.type != "cpu":  # the fused kernel's CPU version is the tested one
        mean = group_mean(x3, groups)
        d = x3 - _per_channel(mean, c)
        return mean, _group_sum(d.square_().sum(1), groups) / (l * (c // groups))
    stats = [torch.batch_norm_update_stats(xs, None, None, 0.0) for xs in x3.unbind(0)]
    mean_c = torch.stack([m for m, _ in stats]).reshape(n, groups, c // groups)
    var_c = torch.stack([v for _, v in stats]).reshape(n, groups, c // groups)
    mean = mean_c.mean(-1)
    return mean, var_c.mean(-1) + (mean_c - mean.unsqueeze(-1)).square().mean(-1)


@kernel
def s0_fwd(x3, v, gamma, beta, groups: int, eps: float):
    """``(y, mean, rstd)``: group statistics, then the gate and the affine in three passes in one buffer."""
    c = x3.shape[-1]
    mean, var = group_moments3(x3, groups)
    rstd = torch.rsqrt(var + eps)
    y = torch.sigmoid_(x3 * v).mul_(x3)  # h = x * sigmoid(v x)
    return torch.addcmul(beta, y, _per_channel(rstd, c) * gamma, out=y), mean, rstd


@kernel
def s0_bwd(dy3, x3, v, gamma, mean, rstd, groups: int):
    """``(dx, dv, dgamma, dbeta)`` of EvoNorm-S0 (the sigmoid is recomputed from the saved input).

    Per (sample, channel) sums over positions pair up in fused passes (``per_sample_sums``).
    """
    n, l, c = x3.shape
    count = l * (c // groups)
    a = _per_channel(rstd, c) * gamma  # (N, 1, C): dL/dh = dy * a with h = x * sigmoid(v x)
    s = torch.sigmoid_(x3 * v)
    t = x3 * s  # h
    q, sdy = per_sample_sums(dy3, t)  # (N, C): sums over positions of dy * h and of dy
    torch.addcmul(t, t, s, value=-1.0, out=t)  # t = h (1 - s) = x s (1 - s)
    s.addcmul_(t, v)  # s = dh/dx = s + v x s (1 - s)
    dv = (per_sample_sums(dy3, t.mul_(x3))[0] * a[:, 0]).sum(0)  # sum dy * a * x^2 s (1 - s)
    drstd = _group_sum(q * gamma, groups)  # dL/drstd per (sample, group)
    k = -drstd * rstd.pow(3) / count  # coefficient of (x - mean) through the group variance
    dx = s.mul_(dy3).mul_(a).addcmul_(x3, _per_channel(k, c)).sub_(_per_channel(k * mean, c))
    return dx, dv, (q * _per_channel(rstd, c)[:, 0]).sum(0), sdy.sum(0)


class EvoNormS0Function(torch.autograd.Function):
    """EvoNorm-S0 on ``(N, L, C)``; saves the input and per-group mean / rstd."""

    @staticmethod
    def forward(ctx, x3, v, gamma, beta, groups, eps, compiled):
        """Gate and normalize per (sample, group) (see ``s0_fwd``)."""
        y, mean, rstd = s0_fwd(x3, v, gamma, beta, groups, eps, compiled=compiled)
        ctx.save_for_backward(x3, v, gamma, mean, rstd)
        ctx.groups, ctx.compiled = groups, compiled
        return y

    @staticmethod
    def backward(ctx, dy):
        """Analytic gradient (see ``s0_bwd``)."""
        x3, v, gamma, mean, rstd = ctx.saved_tensors
        dx, dv, dg, db = s0_bwd(dy.contiguous(), x3, v, gamma, mean, rstd, ctx.groups, compiled=ctx.compiled)
        return dx, dv, dg, db, None, None, None  # v, gamma, beta are tensors; autograd drops a frozen one's gradient


def evonorm_s0(x, v, gamma, beta, groups: int, eps: float, compiled: bool) -> torch.Tensor:
    """Fast EvoNorm-S0 of a channels-last ``(N, *positions, C)`` input."""
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])
    return EvoNormS0Function.apply(x3, v, gamma, beta, groups, eps, compiled).reshape(x.shape)
