"""Independent float64 numpy references of the norms' paper formulas (reference/norms.md), shared by tests/norms.

Every reference is written from the paper's formula, not from the module under test.
"""

from __future__ import annotations

import numpy as np
import torch

import normlight


def build(name, c, **kw):
    return normlight.create_norm(name, c, **kw)


def run(module, x_np, dtype=torch.float32):
    """Forward a float64 numpy array through ``module`` in ``dtype``; result as float64 numpy."""
    with torch.no_grad():
        return module(torch.from_numpy(x_np).to(dtype)).double().numpy()


def randn(*shape, seed=0, scale=1.0, shift=0.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + shift


# ---------------------------------------------------------------- numpy references (float64)


def np_layernorm(x, eps=1e-5, w=None, b=None):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def np_rmsnorm(x, eps, k=None, outside=False, w=None, b=None):
    k = x.shape[-1] if k is None else k
    ms = (x[..., :k] ** 2).mean(-1, keepdims=True)
    y = x / (np.sqrt(ms) + eps) if outside else x / np.sqrt(ms + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def rand(*shape, seed=0, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale + shift


def np_bn_train(x, eps=1e-5):
    """Per-channel batch norm of a channels-last array over all dims but the last (biased var)."""
    r = x.reshape(-1, x.shape[-1])
    mean, var = r.mean(0), r.var(0)
    return (x - mean) / np.sqrt(var + eps), mean, var, r.shape[0]


def np_groupnorm(x_nchw, groups, eps=1e-5, w=None, b=None):
    n, c = x_nchw.shape[:2]
    g = x_nchw.reshape(n, groups, -1)
    mu, var = g.mean(-1, keepdims=True), g.var(-1, keepdims=True)  # biased
    y = ((g - mu) / np.sqrt(var + eps)).reshape(x_nchw.shape)
    shape = (1, c) + (1,) * (x_nchw.ndim - 2)
    return y * (1 if w is None else w.reshape(shape)) + (0 if b is None else b.reshape(shape))


def np_grn(x_nhwc, gamma, beta, eps=1e-6):
    g = np.sqrt((x_nhwc**2).sum(axis=(1, 2), keepdims=True))
    n = g / (g.mean(axis=-1, keepdims=True) + eps)
    return gamma * (x_nhwc * n) + beta + x_nhwc


def np_group_scaling(x, groups, eps=1e-5):
    g = x.reshape(*x.shape[:-1], groups, -1)
    return (g / np.sqrt((g**2).mean(-1, keepdims=True) + eps)).reshape(x.shape)


def np_powernorm_step(xg, dy, w, b, phi, ema, t, warmup, eps=1e-5, afwd=0.9, abkw=0.9):
    """One training iteration of PowerNorm on rows (M, C) of group-scaled input; paper's backward."""
    psi2 = (xg**2).mean(0)
    z = xg / np.sqrt((psi2 if t <= warmup else phi) + eps)
    if t < warmup:
        phi = phi * (t - 1) / t + psi2 / t
    phi = afwd * phi + (1 - afwd) * psi2
    g_hat = dy * w - (1 - abkw) * ema * z
    ema = ema + (g_hat * z).mean(0)
    dx = g_hat / np.sqrt(psi2 + eps)
    return z * w + b, phi, ema, dx, (dy * z).sum(0), dy.sum(0), psi2


def np_bcn(x, groups, gw, gb, eps=1e-5):
    """BN per channel over (N, positions), then GN per (sample, group) and a per-group affine; channels-last."""
    y = np_bn_train(x, eps)[0]
    N, C = x.shape[0], x.shape[-1]
    g = y.reshape(N, -1, groups, C // groups)
    mean, var = g.mean((1, 3), keepdims=True), g.var((1, 3), keepdims=True)
    z = (g - mean) / np.sqrt(var + eps)
    return (z * gw.reshape(1, 1, groups, 1) + gb.reshape(1, 1, groups, 1)).reshape(x.shape)


def np_evonorm_b0(x, var_batch, v, w, b, eps=1e-3):
    """Channels-last (N, *P, C); instance variance per (sample, channel) over positions."""
    axes = tuple(range(1, x.ndim - 1))
    std_inst = np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return x / np.maximum(np.sqrt(var_batch + eps), v * x + std_inst) * w + b


class NumpyUN:
    """Unified Normalization (norms.md sec 4) in float64 numpy, one training iteration per ``step``."""

    def __init__(self, C, window, warmup, outlier, t0=0, eps=1e-5, m=0.9, ratio_warmup=1000):
        self.W, self.warmup, self.outlier, self.eps, self.m, self.t = window, warmup, outlier, eps, m, t0
        self.ratio_warmup = ratio_warmup
        self.rv, self.ema = np.ones(C), np.zeros(C)
        self.bx2, self.bgz = np.zeros((window, C)), np.zeros((window, C))
        self.skips = 0

    def step(self, x, dy, w, b):
        self.t += 1
        t, W, eps, m = self.t, self.W, self.eps, self.m
        x2 = (x**2).mean(0)
        skip = W <= 1
        recorded = np.sqrt(self.bx2).var(ddof=1)
        self.bx2[t % W] = x2
        gm = lambda a: np.exp(np.log(a).mean(0))  # noqa: E731
        if self.outlier and t >= self.warmup and np.any(self.bx2.mean(0) - gm(self.bx2) > recorded * W):
            self.bx2[t % W] = self.rv
            skip, self.skips = True, self.skips + 1
        var = x2 if (t <= W or t < self.warmup or skip) else gm(self.bx2)
        r = np.sqrt(var + eps) / np.sqrt(self.rv + eps)
        r = np.ones_like(r) if (t <= max(self.ratio_warmup, self.warmup) or skip) else np.clip(r, 0.2, 5)
        z = x / np.sqrt(var + eps)
        self.rv = m * self.rv + (1 - m) * var
        g = dy * w * r
        gz = (g * z).mean(0)
        self.bgz[t % W] = self.ema if skip else gz
        mean_gz = gz if (t <= W or t < self.warmup or skip) else self.bgz.mean(0)
        self.ema = m * self.ema + (1 - m) * mean_gz
        dx = (g - (mean_gz if skip else self.ema) * z) / np.sqrt(var + eps)
        return w * z + b, dx, (dy * r * z).sum(0), var


def np_dyt(x, dy, alpha, w, b):
    """DyT ``w * tanh(alpha x) + b`` and its gradients for the output gradient ``dy``: (y, dx, dalpha, dw, db)."""
    t = np.tanh(alpha * x)
    dt = dy * w * (1 - t**2)  # dL/d(alpha x)
    rows = (-1, x.shape[-1])
    return w * t + b, dt * alpha, (dt * x).sum(), (dy * t).reshape(rows).sum(0), dy.reshape(rows).sum(0)
