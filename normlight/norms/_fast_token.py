"""Fast paths of the per-token norms: RMSNorm, CRMSNorm, ScaleNorm / L2Norm and DyT.

Each is a ``torch.autograd.Function`` whose forward saves only the input and per-row statistics (DyT:
the input alone) and whose backward is the analytic gradient written with as few full-size passes as
eager torch allows: per-channel sums over rows and per-row sums over channels go through matrix-vector
products (``fast.colsum`` / ``fast.rowdot``), which run at copy speed on CPU. The arithmetic is in
``@kernel`` functions so ``compile_norms`` can compile it. Inputs are ``(..., C)`` in the compute dtype
(float32 for half inputs: the callers cast), parameters in the same dtype.
"""

from __future__ import annotations

import torch

from normlight.norms.fast import colsum, kernel, rowdot, rows2d


# ------------------------------------------------------------------ RMSNorm: y = x * rstd * w (+ b)
@kernel
def rms_fwd(x, weight, bias, eps: float):
    """``(y, rstd)`` with ``rstd = 1 / sqrt(mean(x^2) + eps)`` per row."""
    c = x.shape[-1]
    rstd = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square() / c + eps)
    y = x * rstd
    if weight is not None:
        y = y.mul_(weight) if bias is None else torch.addcmul(bias, y, weight)
    elif bias is not None:
        y = y.add_(bias)
    return y, rstd


@kernel
def rms_bwd(dy, x, weight, bias, rstd, mask: list[bool]):
    """``(dx, dweight, dbias)`` on torch's fused LayerNorm backward, fed a zero mean.

    With ``mean = 0`` the LayerNorm gradient ``rstd * (g - mean_C(g) - xhat * mean_C(g * xhat))``
    (``g = dy * weight``, ``xhat = x * rstd``) is RMSNorm's gradient minus ``rstd * mean_C(g)``, which
    one matrix-vector product adds back; its weight and bias gradients are RMSNorm's.
    """
    c = x.shape[-1]
    dx, dw, db = torch.ops.aten.native_layer_norm_backward(
        dy, x, [c], torch.zeros_like(rstd), rstd, weight, bias, [True, mask[0], mask[1]]
    )
    g = dy.sum(-1, keepdim=True) if weight is None else rowdot(dy, weight)
    return dx.add_(g * (rstd / c)), dw, db


class RMSNormFunction(torch.autograd.Function):
    """RMSNorm with eps inside the root over all features; saves ``x`` and ``rstd``."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, compiled):
        """``x * rstd * weight (+ bias)``."""
        y, rstd = rms_fwd(x, weight, bias, eps, compiled=compiled)
        ctx.save_for_backward(x, weight, bias, rstd)
        ctx.compiled = compiled
        return y

    @staticmethod
    def backward(ctx, dy):
        """Analytic gradient (see ``rms_bwd``)."""
        x, weight, bias, rstd = ctx.saved_tensors
        need = [ctx.needs_input_grad[1], ctx.needs_input_grad[2]]  # False for a None weight / bias
        dx, dw, db = rms_bwd(dy.contiguous(), x, weight, bias, rstd, need, compiled=ctx.compiled)
        return dx, dw, db, None, None


def rms_norm(x, weight, bias, eps: float, compiled: bool) -> torch.Tensor:
    """Fast RMSNorm over the last dim (eps inside the root); ``weight`` / ``bias`` may be None."""
    return RMSNormFunction.apply(x, weight, bias, eps, compiled)


# ------------------------------------------------------------------ CRMSNorm: y = z * rstd * w
@kernel
def crms_fwd(z, weight, eps: float):
    """``(y, rstd, s1)``, ``rstd = 1 / sqrt((sum z^2 + (sum z)^2) / (C + 1) + eps)``, ``s1 = sum z``."""
    c = z.shape[-1]
    s1 = z.sum(-1, keepdim=True)
    rstd = torch.rsqrt((torch.linalg.vector_norm(z, dim=-1, keepdim=True).square() + s1.square()) / (c + 1) + eps)
    y = z * rstd
    return (y if weight is None else y * weight), rstd, s1


@kernel
def crms_bwd(dy, z, weight, rstd, s1):
    """``(dz, dweight)``: ``dz = rstd * (g - rstd^2 * sum(g * z) / (C + 1) * (z + sum z))``, ``g = dy * weight``."""
    c = z.shape[-1]
    dz = dy * z  # the one full-size temporary, reused for dz below
    if weight is None:
        s, dw = dz.sum(-1, keepdim=True), None
    else:
        s, dw = rowdot(dz, weight), colsum(dz, rstd)
    # three in-place passes: an addcmul whose two row-broadcast (M, 1) operands are both per row is
    # not vectorized on CPU (2.5x a mul)
    if weight is None:  # rstd folded into the coefficients
        k = -rstd.pow(3) * s / (c + 1)
        return torch.mul(z, k, out=dz).addcmul_(dy, rstd).add_(k * s1), dw
    k = -rstd.square() * s / (c + 1)
    return torch.mul(z, k, out=dz).add_(k * s1).addcmul_(dy, weight).mul_(rstd), dw


class CRMSNormFunction(torch.autograd.Function):
    """CRMSNorm of a compressed zero-mean vector; saves ``z``, ``rstd`` and the row sums."""

    @staticmethod
    def forward(ctx, z, weight, eps, compiled):
        """``z * rstd (* weight)``."""
        y, rstd, s1 = crms_fwd(z, weight, eps, compiled=compiled)
        ctx.save_for_backward(z, weight, rstd, s1)
        ctx.compiled = compiled
        return y

    @staticmethod
    def backward(ctx, dy):
        """Analytic gradient (see ``crms_bwd``)."""
        z, weight, rstd, s1 = ctx.saved_tensors
        dz, dw = crms_bwd(dy, z, weight, rstd, s1, compiled=ctx.compiled)
        return dz, dw, None, None  # dw is None without a weight; autograd drops it for a frozen one


def crms_norm(z, weight, eps: float, compiled: bool) -> torch.Tensor:
    """Fast CRMSNorm over the last dim."""
    return CRMSNormFunction.apply(z, weight, eps, compiled)


# ------------------------------------------------------------------ ScaleNorm / L2Norm: y = g * x / max(||x||, eps)
@kernel
def l2_fwd(x, g, eps: float):
    """``(y, norm)`` with ``y = g * x / max(norm, eps)`` (``g`` None = 1; ``eps`` 0 = no clamp)."""
    n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    d = n.clamp_min(eps) if eps > 0 else n
    scale = (1.0 / d) if g is None else g / d
    return x * scale, n


@kernel
def l2_bwd(dy, x, g, n, eps: float):
    """``(dx, dg)``: ``dx = a * (dy - [n >= eps] * sum(dy * x) / (d * n) * x)`` with ``d = max(n, eps)``, ``a = g / d``."""
    d = n.clamp_min(eps) if eps > 0 else n
    a = (1.0 / d) if g is None else g / d
    dx = dy * x  # the one full-size temporary, reused for dx below
    s = dx.sum(-1, keepdim=True)
    k = -s / (d * n)
    if eps > 0:  # the clamp passes no gradient to the norm where it is active (as clamp_min's backward)
        k = torch.where(n >= eps, k, torch.zeros_like(k))
    torch.mul(x, k, out=dx)
    dx = dx.add_(dy).mul_(a)
    dg = None if g is None else (s / d).sum().reshape(1)
    return dx, dg


class L2NormFunction(torch.autograd.Function):
    """ScaleNorm (``g`` a (1,) tensor) or L2Norm (``g`` None); saves ``x`` and the row norms."""

    @staticmethod
    def forward(ctx, x, g, eps, compiled):
        """``g * x / max(||x||, eps)``."""
        y, n = l2_fwd(x, g, eps, compiled=compiled)
        ctx.save_for_backward(x, g, n)
        ctx.eps, ctx.compiled = eps, compiled
        return y

    @staticmethod
    def backward(ctx, dy):
        """Analytic gradient (see ``l2_bwd``)."""
        x, g, n = ctx.saved_tensors
        dx, dg = l2_bwd(dy, x, g, n, ctx.eps, compiled=ctx.compiled)
        return dx, dg, None, None  # dg is None for L2Norm; autograd drops it for a frozen g


def l2_scale(x, g, eps: float, compiled: bool) -> torch.Tensor:
    """Fast ``g * x / max(||x||, eps)`` over the last dim (``g`` None: unit norm)."""
    return L2NormFunction.apply(x, g, eps, compiled)


# ------------------------------------------------------------------ DyT: y = w * tanh(alpha * x) + b
# CPU tanh is compute-bound (~12 copies of the tensor on this machine), sigmoid is not (~1.4):
# tanh(u) = 2 * sigmoid(2u) - 1, so y = 2w * sigmoid(2 alpha x) + (b - w).
@kernel
def dyt_fwd(x, alpha, weight, bias):
    """``weight * tanh(alpha * x) + bias`` through the sigmoid (the body ``compile_norms`` fuses)."""
    s = torch.sigmoid_(x * (2 * alpha))
    shift = -weight if bias is None else bias - weight
    return torch.addcmul(shift, s, 2 * weight, out=s)


@kernel
def dyt_bwd(dy, x, alpha, weight, has_bias: bool):
    """``(dx, dalpha, dweight, dbias)`` from the saved input alone (the sigmoids are recomputed).

    ``1 - tanh^2 = 4 s m`` with ``s = sigmoid(2u)``, ``m = sigmoid(-2u)``: both tails stay accurate where
    ``1 - s`` would cancel (a saturated unit still passes its small gradient to ``alpha``).
    """
    u = x * (2 * alpha)
    s = torch.sigmoid(u)
    m = torch.sigmoid_(u.neg_())
    t = s.sub_(m)  # tanh(alpha x)
    r = m.addcmul_(m, t).mul_(dy).mul_(2 * weight)  # 2m(1 + t) = 4 s m; r = dL/d(alpha x)
    dalpha = torch.dot(r.reshape(-1), x.reshape(-1)).reshape(1)
    db = colsum(dy)
    dw = colsum(t.mul_(dy))
    return r.mul_(alpha), dalpha, dw, db if has_bias else None


# Eager CPU/GPU bodies with fewer passes: ``softplus_backward(g, x, beta)`` is ``g * sigmoid(beta * x)``
# in ONE fused pass (scale, sigmoid and product; its ``beta`` is a Python number, so these bodies read
# ``alpha`` on the host and are not the ones compiled). Above ``beta * x > threshold`` it returns ``g``:
# sigmoid is 1 there to the dtype's precision (1 - 2e-9 at 20 rounds to 1 in float32, 1 - 4e-18 at 40
# in float64), so the result is the sigmoid's, not an approximation.
def _threshold(dtype: torch.dtype) -> float:
    return 40.0 if dtype == torch.float64 else 20.0


def _gsigmoid(g, x, beta: float):
    """``g * sigmoid(beta * x)`` in one pass (``g`` broadcast against ``x``)."""
    return torch.ops.aten.softplus_backward(g, x, beta, _threshold(x.dtype))


def dyt_fwd_eager(x, a: float, weight, bias):
    """``2w * sigmoid(2 a x) + (b - w)``: one fused pass and one in-place shift."""
    shift = -weight if bias is None else bias - weight
    return _gsigmoid(2 * weight, x, 2 * a).add_(shift)


def dyt_bwd_eager(dy, x, a: float, weight, has_bias: bool):
    """``(dx, dalpha, dweight, dbias)`` in five full passes.

    ``s = sigmoid(2 a x)`` and ``dy * m`` (``m = sigmoid(-2 a x)``) each in one fused pass, both accurate
    in their tails, so ``1 - tanh^2 = 4 s m`` does not cancel; ``sum dy * tanh`` and ``sum dy`` per
    channel in one fused BatchNorm-backward pass fed ``s`` with mean 1/2 and inverse std 2
    (``(s - 1/2) * 2 = tanh``).
    """
    s = _gsigmoid(x.new_ones(()), x, 2 * a)
    half, two = torch.full_like(weight, 0.5), torch.full_like(weight, 2.0)
    _, dw, db = torch.ops.aten.native_batch_norm_backward(
        rows2d(dy), rows2d(s), None, None, None, half, two, True, 0.0, [False, True, True]
    )
    r = _gsigmoid(dy, x, -2 * a).mul_(s).mul_(4 * weight)  # dy * 4 s m * w = dL/d(alpha x)
    dalpha = torch.dot(r.reshape(-1), x.reshape(-1)).reshape(1)
    return r.mul_(a), dalpha, dw, db if has_bias else None


class DyTFunction(torch.autograd.Function):
    """DyT saving only its input (half of what autograd keeps for the eager formula)."""

    @staticmethod
    def forward(ctx, x, alpha, weight, bias, compiled):
        """``weight * tanh(alpha * x) + bias``."""
        ctx.save_for_backward(x, alpha, weight)
        # traced (compile_norms, or inside a whole-model compile): the tensor-only bodies, no host read of alpha
        compiled = compiled or torch.compiler.is_compiling()
        ctx.has_bias, ctx.compiled = bias is not None, compiled
        if compiled:
            return dyt_fwd(x, alpha, weight, bias, compiled=True)
        return dyt_fwd_eager(x, float(alpha), weight, bias)

    @staticmethod
    def backward(ctx, dy):
        """Analytic gradient (see ``dyt_bwd`` / ``dyt_bwd_eager``)."""
        x, alpha, weight = ctx.saved_tensors
        dy = dy.contiguous()
        if ctx.compiled or torch.compiler.is_compiling():
            dx, da, dw, db = dyt_bwd(dy, x, alpha, weight, ctx.has_bias, compiled=True)
        else:
            dx, da, dw, db = dyt_bwd_eager(dy, x, float(alpha), weight, ctx.has_bias)
        return dx, da, dw, db, None  # db is None without a bias; autograd drops a frozen parameter's gradient


def dyt(x, alpha, weight, bias, compiled: bool) -> torch.Tensor:
    """Fast DyT over the last dim (``bias`` may be None)."""
    return DyTFunction.apply(x, alpha, weight, bias, compiled)
