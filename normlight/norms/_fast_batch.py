"""Fast paths of the batch-statistic norms: state-aware autograd Functions on rows ``(M, C)``.

Each Function computes its per-channel statistics in as few passes as eager torch allows (column sums
through matrix-vector products, an exact two-pass variance instead of ``torch.var_mean``, which is
~28 copies of the tensor on CPU), sums them over data-parallel ranks when ``sync`` (the same sums the
reference code all-reduces), and has an analytic backward whose per-channel gradient sums are
all-reduced the same way the reference's differentiable all-reduce does. Running statistics are
updated by the caller (BatchNorm family) or inside the Function exactly as the reference does
(PowerNorm, UN: their buffers change in forward and backward). Only the input and per-channel (or
per-row) statistics are saved for backward.

A padding ``real`` row mask (bool, True = real token) keeps rows out of the statistics; the
normalization still applies to every row, as in the reference.
"""

from __future__ import annotations

import torch

from normlight import distributed
from normlight.norms import _batchstats as bs
from normlight.norms.fast import colsum, kernel


def _weights(real: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if real is None else real.to(dtype)


def row_count(
    name: str, x2: torch.Tensor, real: torch.Tensor | None, sync: bool, minimum: int = 2
) -> int | torch.Tensor:
    """Number of rows entering the statistics (over all ranks when ``sync``); errors out below ``minimum``."""
    if real is None and not sync:
        n = x2.shape[0]
        if minimum == 2:
            bs.require_values(name, n)
        return n
    count = x2.new_tensor([x2.shape[0] if real is None else float(real.sum())])
    if sync:
        distributed.all_reduce_sum_(count)
    n = int(count.item())
    if minimum == 2:
        bs.require_values(name, n)
    elif n < 1:
        raise ValueError(f"{name}: no real token in the batch to compute statistics from (all masked out)")
    return n


def synced(t: torch.Tensor, sync: bool) -> torch.Tensor:
    """``t`` summed over ranks in place when ``sync``."""
    return distributed.all_reduce_sum_(t) if sync else t


# ------------------------------------------------------------------ BatchNorm family: y = (x - mean) * rstd * w + b (+ alpha * x)
@kernel
def centered_sumsq(x2, mean, wr):
    """Per-channel ``sum_rows(w_row * (x - mean)^2)`` (``wr`` None = every row)."""
    d = (x2 - mean).square_()
    return colsum(d, wr)


@kernel
def centered_affine(x2, mean, scale, shift):
    """``(x - mean) * scale + shift`` per channel (centered first: no cancellation when ``|mean| >> std``)."""
    return (x2 - mean).mul_(scale).add_(shift)


@kernel
def affine_rows(x2, scale, shift):
    """``x * scale + shift`` per channel."""
    return torch.addcmul(shift, x2, scale)


@kernel
def bn_sums(dy, x2, mean, rstd):
    """``(p, sum dy, sum dy * xhat, sum dy * x)`` per channel over all local rows (``p`` a free temporary).

    ``dy * (x - mean)`` is summed, not ``dy * x - mean * dy``: no cancellation when ``|mean| >> std``.
    """
    p = (x2 - mean).mul_(dy)
    a, c = colsum(dy), colsum(p)
    return p, a, rstd * c, c + mean * a


class BatchAffineFunction(torch.autograd.Function):
    """``(x - mean) * rstd * weight + bias + alpha * x`` with batch statistics over real rows (BatchNorm, RepBN).

    Returns ``(y, mean, var)``; ``mean`` and the biased ``var`` are non-differentiable outputs for the
    running-statistics update. ``weight``/``bias``/``alpha`` may be None.
    """

    @staticmethod
    def forward(ctx, x2, weight, bias, alpha, real, n, sync, eps, compiled):
        """Statistics (two passes, synced sums), then one affine pass."""
        wr = _weights(real, x2.dtype)
        mean = synced(colsum(x2, wr), sync) / n
        var = synced(centered_sumsq(x2, mean, wr, compiled=compiled), sync) / n
        rstd = torch.rsqrt(var + eps)
        scale = rstd if weight is None else rstd * weight
        shift = torch.zeros_like(mean) if bias is None else bias
        if alpha is not None:  # BN(x) + alpha x = (x - mean) (scale + alpha) + bias + alpha mean
            scale, shift = scale + alpha, shift + alpha * mean
        y = centered_affine(x2, mean, scale, shift, compiled=compiled)
        ctx.save_for_backward(x2, weight, alpha, real, mean, rstd)
        ctx.n, ctx.sync, ctx.compiled = n, sync, compiled
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        """``dx = s * dy - [real] * rstd * w / n * (sum dy + xhat * sum dy xhat)``, sums over all rows and ranks."""
        x2, weight, alpha, real, mean, rstd = ctx.saved_tensors
        dy = dy.contiguous()
        p, a, t, b = bn_sums(dy, x2, mean, rstd, compiled=ctx.compiled)
        dw, db = t.clone(), a.clone()  # local sums: parameter gradients are per rank
        glob = synced(torch.stack([a, t]), ctx.sync)
        ga, gt = glob[0], glob[1]
        rw = rstd if weight is None else rstd * weight
        k2 = -rw * rstd * gt / ctx.n
        k1 = -rw * ga / ctx.n - mean * k2
        torch.addcmul(k1, x2, k2, out=p)
        if real is not None:
            p.mul_(real.to(p.dtype).unsqueeze(1))
        s = rw if alpha is None else rw + alpha
        dx = p.addcmul_(dy, s)
        need = ctx.needs_input_grad
        return (
            dx,
            dw if need[1] else None,
            db if need[2] else None,
            b.sum().reshape(1) if need[3] else None,
            None,
            None,
            None,
            None,
            None,
        )


def batch_affine(x2, weight, bias, alpha, real, n, sync, eps, compiled):
    """Fast batch normalization of rows ``(M, C)`` (+ ``alpha * x``); returns ``(y, mean, biased var)``."""
    return BatchAffineFunction.apply(x2, weight, bias, alpha, real, n, sync, eps, compiled)


class NativeBatchAffineFunction(torch.autograd.Function):
    """``BN(x) + alpha * x`` on torch's fused BatchNorm kernels (no mask, no sync): RepBN / PRepBN.

    The running statistics are updated by the kernel (``factor`` = momentum); returns ``(y, mean, invstd)``.
    """

    @staticmethod
    def forward(ctx, x2, weight, bias, alpha, running_mean, running_var, factor, eps):
        """One fused BatchNorm pass, then ``+ alpha * x`` in place."""
        y, mean, invstd = torch.native_batch_norm(x2, weight, bias, running_mean, running_var, True, factor, eps)
        if alpha is not None:
            y.addcmul_(x2, alpha)
        ctx.save_for_backward(x2, weight, alpha, mean, invstd)  # the backward in training reads no running stats
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, invstd)
        return y, mean, invstd

    @staticmethod
    def backward(ctx, dy, _dmean, _dinvstd):
        """torch's fused BatchNorm backward, plus ``alpha * dy`` and ``dalpha = sum(dy * x)``."""
        x2, weight, alpha, mean, invstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        dy = dy.contiguous()
        dx, dw, db = torch.ops.aten.native_batch_norm_backward(
            dy, x2, weight, None, None, mean, invstd, True, ctx.eps, [True, need[1], need[2]]
        )
        if alpha is not None:
            dx.addcmul_(dy, alpha)
        da = torch.dot(dy.reshape(-1), x2.reshape(-1)).reshape(1) if need[3] else None  # False for a None alpha
        return dx, dw, db, da, None, None, None, None


def native_batch_affine(x2, weight, bias, alpha, running_mean, running_var, factor, eps):
    """Fast ``BN(x) + alpha * x`` of rows ``(M, C)`` on torch's kernels; returns ``(y, mean, invstd)``."""
    return NativeBatchAffineFunction.apply(x2, weight, bias, alpha, running_mean, running_var, factor, eps)


# ------------------------------------------------------------------ EvoNorm-B0
@kernel
def b0_fwd(x3, v, gamma, beta, std_b, std_i):
    """``y = gamma * x / max(std_b, v * x + std_i) + beta`` (one temporary, in-place passes)."""
    y = torch.addcmul(std_i, v, x3).clamp_min_(std_b)
    return torch.addcmul(beta, torch.div(x3, y, out=y), gamma, out=y)


def pair_sums(g2: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(sum g * x, sum g)`` of two ``(rows, C)`` tensors in ONE fused pass.

    That is torch's BatchNorm backward asked for its weight and bias gradients only, fed mean 0 and
    inverse std 1 (its ``sum(dy * (x - mean) * invstd)`` and ``sum(dy)``).
    """
    zero, one = x2.new_zeros(x2.shape[1:]), x2.new_ones(x2.shape[1:])  # per channel
    _, sgx, sg = torch.ops.aten.native_batch_norm_backward(
        g2, x2, None, None, None, zero, one, True, 0.0, [False, True, True]
    )
    return sgx, sg


@kernel
def b0_bwd(dy, x3, v, gamma, std_b, std_i):
    """The elementwise part of B0's backward: ``(dx_direct, B_i, dgamma, dv, sum q, sum B, dbeta)``.

    ``q = dy * gamma * x / den^2``; the instance branch ``r = v x + std_i`` receives ``-B = -q * w``
    with ``w`` 1 where it is the max, 0 where the batch std is, 1/2 at ties (``torch.maximum``'s rule);
    ``dx_direct = dy * gamma / den - B * v`` (the statistics' terms are added by the caller); ``B_i``
    is ``B`` summed over each sample's positions, ``(N, C)``. Per-channel sums over rows pair up in
    fused BatchNorm-backward passes (``pair_sums``); ``gamma`` and the 1/2 of ``w`` are applied to the sums.
    """
    c = x3.shape[-1]
    inv = torch.addcmul(std_i, v, x3)
    w2 = torch.sub(inv, std_b).sign_().add_(1)  # 2 w
    inv.clamp_min_(std_b).reciprocal_()  # 1 / den
    q = torch.mul(x3, inv)  # x / den
    dgamma, dbeta = pair_sums(dy.reshape(-1, c), q.reshape(-1, c))
    q.mul_(inv).mul_(dy)  # q / gamma
    sum_q = colsum(q) * gamma
    b2 = w2.mul_(q)  # 2 B / gamma
    per_sample = [pair_sums(bs_, xs) for bs_, xs in zip(b2.unbind(0), x3.unbind(0))]
    half = 0.5 * gamma
    b_i = torch.stack([sb for _, sb in per_sample]) * half
    dv = -torch.stack([sbx for sbx, _ in per_sample]).sum(0) * half
    dx = inv.mul_(dy).mul_(gamma).addcmul_(b2, half * v, value=-1.0)
    return dx, b_i, dgamma, dv, sum_q, b_i.sum(0), dbeta


@kernel
def instance_moments(x3, wp):
    """Per-(sample, channel) ``(mean, biased var, count)`` over positions (``wp`` (N, L) weights or None)."""
    if wp is None:
        count = x3.new_full((x3.shape[0], 1), float(x3.shape[1]))
        mean = x3.sum(1) / count
        d = (x3 - mean.unsqueeze(1)).square_()
        return mean, d.sum(1) / count, count
    count = wp.sum(1, keepdim=True).clamp_min(1)
    mean = torch.bmm(wp.unsqueeze(1), x3).squeeze(1) / count
    d = (x3 - mean.unsqueeze(1)).square_()
    return mean, torch.bmm(wp.unsqueeze(1), d).squeeze(1) / count, count


class EvoNormB0Function(torch.autograd.Function):
    """EvoNorm-B0 in training on ``(N, L, C)``: batch and instance variances, the max, the affine.

    Returns ``(y, var_batch)`` (``var_batch`` non-differentiable, for the running estimate). The
    gradient of ``max`` is split evenly at ties, as ``torch.maximum``'s.
    """

    @staticmethod
    def forward(ctx, x3, v, gamma, beta, real, n, sync, eps, running_var, compiled):
        """Statistics, then ``gamma * x / max(sqrt(var_b + eps), v * x + sqrt(var_i + eps)) + beta``.

        With ``running_var`` (eval) the batch variance is that buffer and receives no gradient.
        """
        x2 = x3.reshape(-1, x3.shape[-1])
        wr = _weights(real, x3.dtype)
        # torch's fused per-channel statistics kernel, per sample (its CPU kernel, checked against the
        # reference in the tests; other devices take the plain passes)
        if real is None and not sync and not compiled and x3.device.type == "cpu":
            stats = [torch.batch_norm_update_stats(xs, None, None, 0.0) for xs in x3.unbind(0)]
            mean_i, var_i = torch.stack([m for m, _ in stats]), torch.stack([v for _, v in stats])
            count = x3.new_full((x3.shape[0], 1), float(x3.shape[1]))
            if running_var is None:  # the batch's: law of total variance over equal-sized samples (no cancellation)
                mean_b = mean_i.mean(0)
                var_b = var_i.mean(0) + (mean_i - mean_b).square().mean(0)
        else:
            wp = None if wr is None else wr.reshape(x3.shape[0], -1)
            mean_i, var_i, count = instance_moments(x3, wp, compiled=compiled)
            if running_var is None:
                mean_b = synced(colsum(x2, wr), sync) / n
                var_b = synced(centered_sumsq(x2, mean_b, wr, compiled=compiled), sync) / n
        if running_var is not None:
            mean_b, var_b = None, running_var.to(x3.dtype)
        std_b, std_i = torch.sqrt(var_b + eps), torch.sqrt(var_i + eps).unsqueeze(1)
        y = b0_fwd(x3, v, gamma, beta, std_b, std_i, compiled=compiled)
        ctx.save_for_backward(x3, v, gamma, real, mean_b, std_b, mean_i, std_i, count)
        ctx.n, ctx.sync, ctx.compiled, ctx.batch = n, sync, compiled, running_var is None
        ctx.mark_non_differentiable(var_b)
        return y, var_b

    @staticmethod
    def backward(ctx, dy, _dvar):
        """Through the max to the instance std (per sample) or the batch std (per channel, over ranks)."""
        x3, v, gamma, real, mean_b, std_b, mean_i, std_i, count = ctx.saved_tensors
        dy = dy.contiguous()
        dx, b_i, dgamma, dv, sum_q, sum_b, dbeta = b0_bwd(dy, x3, v, gamma, std_b, std_i, compiled=ctx.compiled)
        # statistics: var_i per (sample, channel) gets -sum_l B / (2 std_i); var_b per channel gets the
        # batch std's share -(sum q - sum B) / (2 std_b), summed over ranks
        dvar_i = -b_i / (2 * std_i.squeeze(1))
        k = 2 * dvar_i / count  # (N, C): coefficient of (x - mean_i)
        const = -k * mean_i
        if ctx.batch:
            dvar_b = synced(-(sum_q - sum_b) / (2 * std_b), ctx.sync)
            kb = 2 * dvar_b / ctx.n
            k, const = k + kb, const - kb * mean_b
        if real is None:
            dx.addcmul_(x3, k.unsqueeze(1)).add_(const.unsqueeze(1))
        else:
            corr = torch.addcmul(const.unsqueeze(1), x3, k.unsqueeze(1))
            dx.addcmul_(corr, real.to(dy.dtype).reshape(x3.shape[0], -1, 1))
        # v, gamma, beta are tensors: autograd drops a frozen one's gradient
        return dx, dv, dgamma, dbeta, None, None, None, None, None, None


def evonorm_b0(x3, v, gamma, beta, real, n, sync, eps, running_var, compiled):
    """Fast EvoNorm-B0 on ``(N, L, C)`` (batch statistics, or ``running_var`` in eval); returns ``(y, var)``."""
    return EvoNormB0Function.apply(x3, v, gamma, beta, real, n, sync, eps, running_var, compiled)


# ------------------------------------------------------------------ PowerNorm (with GroupScaling) and UN
@kernel
def quad_mean(x2, wr, n: int):
    """Per-channel ``sum_rows(w_row * x^2) / n`` (``wr`` None: all rows)."""
    if wr is None and not (torch.is_grad_enabled() and x2.requires_grad):  # fused, no temporary (no double backward)
        return pair_sums(x2, x2)[0] / n  # not vector_norm(dim=0): a strided reduction, ~9 copies on CPU
    return colsum(x2 * x2, wr) / n


@kernel
def group_rstd(x2, groups: int, eps: float):
    """GroupScaling's per-(row, group) ``1 / sqrt(mean(x^2) + eps)``, shape ``(M, G)``."""
    m, c = x2.shape
    g = x2.reshape(m, groups, c // groups)
    return torch.rsqrt(torch.linalg.vector_norm(g, dim=-1).square() / (c // groups) + eps)


def group_scale(x2: torch.Tensor, rg: torch.Tensor) -> torch.Tensor:
    """``x`` times its per-(row, group) factor ``rg`` (M, G), broadcast over each group's channels (no copy of rg)."""
    m, c = x2.shape
    g = rg.shape[1]
    return (x2.reshape(m, g, c // g) * rg.unsqueeze(-1)).reshape(m, c)


@kernel
def power_bwd(dy, x2, weight, rg, rphi, psi2, ema, wr, coef: float, groups: int, eps: float):
    """PowerNorm's approximate backward to ``xs`` then GroupScaling's exact backward to ``x``.

    Returns ``(dx, dweight, dbias, gz)`` with ``gz = sum_real(g_hat * z)`` (local, before any all-reduce).
    """
    m, c = x2.shape
    cg = c // groups
    z = group_scale(x2, rg).mul_(rphi)  # z = GroupScaling(x) / sqrt(phi + eps)
    dw, db = pair_sums(dy, z)  # sum dy * z, sum dy: one fused pass
    g_hat = torch.mul(dy, weight).addcmul_(z, -coef * ema)  # g_hat = dy w - (1 - alpha_bkw) ema_gz z
    gz = pair_sums(g_hat, z)[0] if wr is None else colsum(z.mul_(g_hat), wr)
    dxs = g_hat.mul_(torch.rsqrt(psi2 + eps))  # the BATCH psi2, even after warmup
    # GroupScaling xs = x * rg: per (row, group) an RMSNorm without weight; dx is written into z's buffer
    s = torch.mul(dxs, x2, out=z).reshape(m, groups, cg).sum(-1)
    k = (-rg.square() * s / cg).unsqueeze(-1)
    dx = z.reshape(m, groups, cg)
    torch.addcmul(dxs.reshape(m, groups, cg), x2.reshape(m, groups, cg), k, out=dx).mul_(rg.unsqueeze(-1))
    return dx.reshape(m, c), dw, db, gz


class PowerNormFunction(torch.autograd.Function):
    """GroupScaling + PowerNorm training step on rows ``(M, C)``, buffers updated as the reference does.

    ``running_phi`` changes in forward (cumulative mean during warmup, then the EMA), ``ema_gz`` in
    backward. Returns ``(y, psi2)`` (``psi2`` non-differentiable: the batch statistic).
    """

    @staticmethod
    def forward(ctx, x2, weight, bias, running_phi, ema_gz, real, n, t, settings, compiled):
        """``settings = (groups, eps, warmup_iters, alpha_fwd, alpha_bkw, sync)``."""
        groups, eps, warmup, alpha_fwd, _, sync = settings
        rg = group_rstd(x2, groups, 1e-5, compiled=compiled)
        xs = group_scale(x2, rg)
        wr = _weights(real, x2.dtype)
        psi2 = synced(quad_mean(xs, wr, 1, compiled=compiled), sync) / n
        phi = psi2 if t <= warmup else running_phi.to(x2.dtype)
        rphi = torch.rsqrt(phi + eps)
        with torch.no_grad():
            if t < warmup:  # cumulative mean during warmup, then the EMA (both run)
                running_phi.mul_((t - 1) / t).add_(psi2.to(running_phi.dtype) / t)
            running_phi.mul_(alpha_fwd).add_(psi2.to(running_phi.dtype), alpha=1 - alpha_fwd)
        # A fresh tensor, not written into xs: xs is a view (group_scale's reshape), and a Function's output that
        # is a view cannot be modified in place by the caller (ResNet's ReLU(inplace=True) after the norm).
        y = torch.addcmul(bias, xs, rphi * weight)  # the backward recomputes xs from x and rg
        ctx.save_for_backward(x2, weight, rg, rphi, psi2, ema_gz, real)
        ctx.n, ctx.settings, ctx.compiled = n, settings, compiled
        ctx.mark_non_differentiable(psi2)
        return y, psi2

    @staticmethod
    def backward(ctx, dy, _dpsi2):
        """The paper's approximate gradient (module docstring of powernorm.py); updates ``ema_gz``."""
        x2, weight, rg, rphi, psi2, ema_gz, real = ctx.saved_tensors
        groups, eps, _, _, alpha_bkw, sync = ctx.settings
        wr = _weights(real, x2.dtype)
        dx, dw, db, gz = power_bwd(
            dy.contiguous(),
            x2,
            weight,
            rg,
            rphi,
            psi2,
            ema_gz.to(x2.dtype),
            wr,
            1 - alpha_bkw,
            groups,
            eps,
            compiled=ctx.compiled,
        )
        ema_gz.add_((synced(gz, sync) / ctx.n).to(ema_gz.dtype))
        return dx, dw, db, None, None, None, None, None, None, None


def power_norm(x2, weight, bias, running_phi, ema_gz, real, n, t, settings, compiled):
    """Fast PowerNorm training step on rows; returns ``(y, psi2)``."""
    return PowerNormFunction.apply(x2, weight, bias, running_phi, ema_gz, real, n, t, settings, compiled)


@kernel
def un_sums(dy, x2, wr):
    """UN's backward sums: ``(p = dy * x, sum_real(dy * x), sum_all(dy * x), sum(dy))`` per channel."""
    p = dy * x2
    return p, colsum(p, wr), colsum(p), colsum(dy)


class UNStepFunction(torch.autograd.Function):
    """UN's training step on rows with precomputed ``var`` and ratio ``r`` (forward logic in unifiednorm.py).

    Saves the input (not ``z``); the backward is the reference's gradient compensation, written as
    ``dx = dy * (rstd * w * r) - x * (comp * rstd^2)``. ``un`` is the module whose buffers it updates.
    """

    @staticmethod
    def forward(ctx, x2, weight, bias, var, r, real, un, t, n, sync, skip, compiled):
        """``y = x * rstd * weight + bias`` with ``rstd = 1 / sqrt(var + eps)``."""
        rstd = torch.rsqrt(var + un.eps)
        y = affine_rows(x2, rstd * weight, bias, compiled=compiled)
        ctx.save_for_backward(x2, weight, r, rstd, real)
        ctx.un, ctx.t, ctx.n, ctx.sync, ctx.skip, ctx.compiled = un, t, n, sync, skip, compiled
        return y

    @staticmethod
    def backward(ctx, dy):
        """Gradient compensation (module docstring of unifiednorm.py); updates ``buffer_gz`` and ``ema_gz``."""
        x2, weight, r, rstd, real = ctx.saved_tensors
        un, t, skip = ctx.un, ctx.t, ctx.skip
        bp, mom = un.window[1], un.momentum
        wr = _weights(real, x2.dtype)
        p, b_real, b_all, db = un_sums(dy.contiguous(), x2, wr, compiled=ctx.compiled)
        gz = synced(weight * r * rstd * b_real, ctx.sync)  # sum_real(g * z) with g = dy * w * r, z = x * rstd
        gz = (gz / ctx.n).to(un.ema_gz.dtype)
        un.buffer_gz[t % bp] = un.ema_gz if skip else gz
        smooth = not (t <= bp or t < un.warmup_iters or skip)
        mean_gz = un.buffer_gz.mean(0) if smooth else gz
        un.ema_gz.mul_(mom).add_(mean_gz, alpha=1 - mom)
        comp = (mean_gz if skip else un.ema_gz).to(x2.dtype)
        torch.mul(x2, -comp * rstd.square(), out=p)
        dx = p.addcmul_(dy, rstd * weight * r)
        return dx, r * rstd * b_all, db, None, None, None, None, None, None, None, None, None


def un_step(x2, weight, bias, var, r, real, un, t, n, sync, skip, compiled):
    """Fast UN training step on rows (statistics and window logic done by the caller)."""
    return UNStepFunction.apply(x2, weight, bias, var, r, real, un, t, n, sync, skip, compiled)
