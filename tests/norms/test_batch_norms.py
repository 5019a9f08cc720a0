"""Batch-statistic norms against independent float64 numpy implementations of their papers' formulas.

References: /work/shared/reference/norms.md sections 3 (PowerNorm), 4 (UN), 11 (BCN), 12 (EvoNorm),
14 (RepBN / progressive LN->RepBN); BatchNorm as in Ioffe & Szegedy / torch's documented semantics.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

import normlight
from normlight.layout import ChannelsFirst
from normlight.norms.batchnorm import BatchNorm


def rand(*shape, seed=0, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale + shift


def np_bn_train(x, eps=1e-5):
    """Per-channel batch norm of a channels-last array over all dims but the last (biased var)."""
    r = x.reshape(-1, x.shape[-1])
    mean, var = r.mean(0), r.var(0)
    return (x - mean) / np.sqrt(var + eps), mean, var, r.shape[0]


# ----------------------------------------------------------------------------------------- batchnorm

def test_batchnorm_init_and_flags():
    m = normlight.create_norm("batchnorm", 6)
    assert m.uses_batch_statistics is True
    assert torch.equal(m.weight, torch.ones(6)) and torch.equal(m.bias, torch.zeros(6))
    assert torch.equal(m.running_mean, torch.zeros(6)) and torch.equal(m.running_var, torch.ones(6))
    assert (m.eps, m.momentum) == (1e-5, 0.1)


def test_batchnorm_tokens_train_eval_and_running_stats_match_numpy():
    m = BatchNorm(6)
    with torch.no_grad():
        m.weight.copy_(rand(6, seed=1) + 1)
        m.bias.copy_(rand(6, seed=2))
    w, b = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
    rm, rv = np.zeros(6), np.ones(6)
    for step in range(3):
        x = rand(4, 5, 6, seed=10 + step, scale=2.0, shift=3.0)
        xn = x.double().numpy()
        z, mean, var, n = np_bn_train(xn)
        y = m(x)
        np.testing.assert_allclose(y.detach().numpy(), w * z + b, rtol=1e-5, atol=1e-5)
        rm = 0.9 * rm + 0.1 * mean
        rv = 0.9 * rv + 0.1 * var * n / (n - 1)  # unbiased for the running estimate
        np.testing.assert_allclose(m.running_mean.numpy(), rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.running_var.numpy(), rv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.batch_stat.numpy(), var, rtol=1e-4, atol=1e-6)  # biased, as normalized
    assert m.running_stat is m.running_var
    m.eval()
    x = rand(3, 5, 6, seed=99)
    want = w * (x.double().numpy() - rm) / np.sqrt(rv + 1e-5) + b
    np.testing.assert_allclose(m(x).detach().numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("via", ["layout", "adapter"])
def test_batchnorm_channels_first_equals_torch_batchnorm2d(via, momentum):
    if via == "layout":
        m = normlight.create_norm("batchnorm", 5, layout="channels_first", momentum=momentum)
    else:
        m = ChannelsFirst(BatchNorm(5, momentum=momentum))
    ref = torch.nn.BatchNorm2d(5, momentum=momentum)
    with torch.no_grad():
        for p, q in zip(m.parameters(), ref.parameters()):
            p.copy_(rand(*p.shape, seed=3) + 1)
            q.copy_(p)
    for step in range(3):
        x = rand(4, 5, 3, 3, seed=20 + step, scale=1.5, shift=-1.0)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = m(xa), ref(xb)
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
        (ya * rand(*x.shape, seed=7)).sum().backward()
        (yb * rand(*x.shape, seed=7)).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
    bn = m if via == "layout" else m.norm
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(ref, name), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(bn.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    m.eval(), ref.eval()
    x = rand(2, 5, 4, 4, seed=30)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)


def test_batchnorm_mask_excludes_padding_from_statistics():
    x = rand(3, 4, 6, seed=4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 2:] = False
    mask[2, 3] = False
    garbage = x.clone()
    garbage[~mask] = 1e3  # padded tokens must not move the statistics
    m1, m2 = BatchNorm(6), BatchNorm(6)
    y1, y2 = m1(x, mask=mask), m2(garbage, mask=mask)
    torch.testing.assert_close(y1[mask], y2[mask])
    real = x[mask].double().numpy()
    z, mean, var, n = np_bn_train(real)
    np.testing.assert_allclose(y1[mask].detach().numpy(), z, rtol=1e-5, atol=1e-5)
    # padded positions are still normalized with the same statistics
    np.testing.assert_allclose(y2[~mask].detach().numpy(), np.broadcast_to((1e3 - mean) / np.sqrt(var + 1e-5), (3, 6)), rtol=1e-5)
    torch.testing.assert_close(m1.running_var, m2.running_var)
    np.testing.assert_allclose(m1.running_var.numpy(), 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)
    np.testing.assert_allclose(m1.running_mean.numpy(), 0.1 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m1.batch_stat.numpy(), var, rtol=1e-5)


def test_batchnorm_micro_batch_error_and_one_sample_warning():
    m = BatchNorm(4)
    with pytest.raises(ValueError, match=r"batchnorm.*more than 1 value.*groupnorm.*bcn.*evonorm_s0.*nf"):
        m(rand(1, 4))
    with pytest.warns(UserWarning, match="batch size 1"):
        y = m(rand(1, 6, 4))
    ref = torch.nn.BatchNorm1d(4)
    torch.testing.assert_close(y, ref(rand(1, 6, 4).transpose(1, 2)).transpose(1, 2), rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one-time warning: the second call is silent
        m(rand(1, 6, 4))
    m.eval()
    m(rand(1, 4))  # eval uses running statistics: batch size 1 is fine


def test_batchnorm_without_running_stats_and_affine():
    m = BatchNorm(3, affine=False, track_running_stats=False)
    assert m.weight is None and m.running_var is None
    m.eval()  # still batch statistics, as torch
    x = rand(4, 2, 3, seed=5)
    np.testing.assert_allclose(m(x).numpy(), np_bn_train(x.double().numpy())[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_batchnorm_half_and_float64_paths(half):
    x = rand(4, 5, 6, seed=6, scale=3.0, shift=2.0)
    m = BatchNorm(6)
    y = m(x.to(half))
    assert y.dtype == half
    torch.testing.assert_close(y.float(), BatchNorm(6)(x.to(half).float()), rtol=2e-2, atol=2e-2)
    mask = torch.ones(4, 5, dtype=torch.bool)
    assert m(x.to(half), mask=mask).dtype == half and m.batch_stat.dtype == torch.float32
    assert m.running_var.dtype == torch.float32 and torch.isfinite(m.running_var).all()
    m64 = BatchNorm(6, dtype=torch.float64)
    x64 = x.double().requires_grad_()
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1, 3:] = False
    assert torch.autograd.gradcheck(lambda t: m64(t, mask=mask), (x64,))


def test_batchnorm_copy_pickle_state_dict():
    m = BatchNorm(4)
    m(rand(3, 2, 4))
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        torch.testing.assert_close(clone.running_var, m.running_var)
    fresh = BatchNorm(4)
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh.running_mean, m.running_mean)


# ----------------------------------------------------------------------------------------- powernorm
from normlight.norms.powernorm import PowerFunction, PowerNorm  # noqa: E402


def np_group_scaling(x, groups, eps=1e-5):
    g = x.reshape(*x.shape[:-1], groups, -1)
    return (g / np.sqrt((g ** 2).mean(-1, keepdims=True) + eps)).reshape(x.shape)


def np_powernorm_step(xg, dy, w, b, phi, ema, t, warmup, eps=1e-5, afwd=0.9, abkw=0.9):
    """One training iteration of PowerNorm on rows (M, C) of group-scaled input; paper's backward."""
    psi2 = (xg ** 2).mean(0)
    z = xg / np.sqrt((psi2 if t <= warmup else phi) + eps)
    if t < warmup:
        phi = phi * (t - 1) / t + psi2 / t
    phi = afwd * phi + (1 - afwd) * psi2
    g_hat = dy * w - (1 - abkw) * ema * z
    ema = ema + (g_hat * z).mean(0)
    dx = g_hat / np.sqrt(psi2 + eps)
    return z * w + b, phi, ema, dx, (dy * z).sum(0), dy.sum(0), psi2


def test_powernorm_train_running_phi_ema_gz_and_eval_match_numpy():
    C, G, warmup = 8, 2, 2
    m = PowerNorm(C, group_num=G, warmup_iters=warmup)
    assert torch.equal(m.running_phi, torch.ones(C)) and torch.equal(m.ema_gz, torch.zeros(C))
    with torch.no_grad():
        m.weight.copy_(rand(C, seed=1) + 1)
        m.bias.copy_(rand(C, seed=2))
    w, b = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
    phi, ema = np.ones(C), np.zeros(C)
    for t in range(1, 5):  # crosses the end of warmup
        x = rand(3, 4, C, seed=40 + t, scale=2.0, shift=0.5)
        dy = rand(3, 4, C, seed=60 + t)
        m.zero_grad()
        y = m(x)
        (y * dy).sum().backward()
        xg = np_group_scaling(x.double().numpy(), G).reshape(-1, C)
        yn, phi, ema, _, dw, db, psi2 = np_powernorm_step(xg, dy.double().numpy().reshape(-1, C), w, b, phi, ema, t, warmup)
        np.testing.assert_allclose(y.detach().numpy().reshape(-1, C), yn, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(m.running_phi.numpy(), phi, rtol=1e-5)
        np.testing.assert_allclose(m.ema_gz.numpy(), ema, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(m.weight.grad.numpy(), dw, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(m.bias.grad.numpy(), db, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(m.batch_stat.numpy(), psi2, rtol=1e-5)
    assert int(m.iters) == 4 and m.running_stat is m.running_phi
    m.eval()
    x = rand(2, 3, C, seed=80)
    want = np_group_scaling(x.double().numpy(), G) / np.sqrt(phi + 1e-5) * w + b
    np.testing.assert_allclose(m(x).detach().numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t,warmup", [(1, 3), (5, 3)])
def test_powernorm_approximate_backward_matches_paper_formula(t, warmup):
    C = 5
    x = rand(6, C, seed=90, scale=1.5).double().requires_grad_()
    w, b = (rand(C, seed=91) + 1).double().requires_grad_(), rand(C, seed=92).double().requires_grad_()
    phi, ema = (rand(C, seed=93).abs() + 0.5).double(), rand(C, seed=94).double()
    phi0, ema0 = phi.numpy().copy(), ema.numpy().copy()
    dy = rand(6, C, seed=95).double()
    state = dict(name="powernorm", eps=1e-5, t=t, warmup_iters=warmup, alpha_fwd=0.9, alpha_bkw=0.9, sync=False)
    y = PowerFunction.apply(x, w, b, phi, ema, None, state)
    (y * dy).sum().backward()
    yn, phin, eman, dx, dw, db, _ = np_powernorm_step(x.detach().numpy(), dy.numpy(), w.detach().numpy(),
                                                      b.detach().numpy(), phi0, ema0, t, warmup)
    np.testing.assert_allclose(y.detach().numpy(), yn, rtol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-10)  # batch psi2, even after warmup
    np.testing.assert_allclose(w.grad.numpy(), dw, rtol=1e-10)
    np.testing.assert_allclose(ema.numpy(), eman, rtol=1e-10)
    np.testing.assert_allclose(phi.numpy(), phin, rtol=1e-10)


def test_powernorm_distinguishing_checks():
    C = 4
    x = rand(4, 3, C, seed=100)
    # (1) no re-centering: a constant shift changes the output (BatchNorm would not)
    m = PowerNorm(C)
    assert not torch.allclose(m(x), m(x + 5.0), atol=1e-3)
    # (2) after warmup the training output uses running_phi, not the batch psi2
    m = PowerNorm(C, warmup_iters=1)
    m(x)
    phi = m.running_phi.clone()
    x2 = rand(4, 3, C, seed=101, scale=3.0)
    torch.testing.assert_close(m(x2), x2 / torch.sqrt(phi + 1e-5) / torch.sqrt((x2 ** 2).mean(-1, keepdim=True) + 1e-5))
    # (3) GroupScaling makes eval output invariant to scaling the whole input
    m.eval()
    torch.testing.assert_close(m(7 * x2), m(x2), rtol=1e-4, atol=1e-5)


def test_powernorm_mask_bf16_gradcheck_and_errors():
    C = 6
    x = rand(3, 4, C, seed=110)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1, 2:] = False
    garbage = x.clone()
    garbage[~mask] = 50.0
    m1, m2 = PowerNorm(C, group_num=3), PowerNorm(C, group_num=3)
    dy = rand(3, 4, C, seed=111)
    y1, y2 = m1(x, mask=mask), m2(garbage, mask=mask)
    torch.testing.assert_close(y1[mask], y2[mask])
    (y1 * dy).sum().backward(), (y2 * dy).sum().backward()
    torch.testing.assert_close(m1.running_phi, m2.running_phi)
    torch.testing.assert_close(m1.ema_gz, m2.ema_gz)
    xg = np_group_scaling(x[mask].double().numpy(), 3)
    np.testing.assert_allclose(m1.batch_stat.numpy(), (xg ** 2).mean(0), rtol=1e-5)
    assert m1(x.bfloat16()).dtype == torch.bfloat16 and torch.isfinite(m1.running_phi).all()
    # the true-gradient parts (GroupScaling and the eval path) pass gradcheck
    m64 = PowerNorm(C, group_num=2, dtype=torch.float64).eval()
    assert torch.autograd.gradcheck(m64, (x.double().requires_grad_(),))
    with pytest.raises(ValueError, match="powernorm.*group_num=4.*num_features=6"):
        PowerNorm(C, group_num=4)


# ------------------------------------------------------------------------------------ repbn / prepbn
from normlight.norms.repbn import PRepBN, RepBN  # noqa: E402


def np_layernorm(x, eps=1e-6):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def test_repbn_forward_eval_and_inference_affine():
    C = 6
    m = normlight.create_norm("repbn", C)
    assert m.uses_batch_statistics and torch.equal(m.alpha, torch.ones(1))
    x = rand(3, 4, C, seed=120, scale=2.0, shift=1.0)
    xn = x.double().numpy()
    np.testing.assert_allclose(m(x).detach().numpy(), np_bn_train(xn)[0] + xn, rtol=1e-5, atol=1e-5)
    fresh = RepBN(C).eval()  # running mean 0, var 1: y = x / sqrt(1 + 1e-5) + x ~= 2x
    np.testing.assert_allclose(fresh(x).detach().numpy(), xn / np.sqrt(1 + 1e-5) + xn, rtol=1e-6, atol=1e-6)
    m.eval()
    with torch.no_grad():
        m.alpha.fill_(0.3)
    scale, shift = m.inference_affine()
    torch.testing.assert_close(m(x), x * scale + shift, rtol=1e-5, atol=1e-6)


def test_prepbn_schedule_ln_to_repbn():
    C, total = 6, 4
    m = normlight.create_norm("prepbn", C, total_steps=total, warmup_steps=1)
    ref_bn = RepBN(C)
    xs = [rand(3, 2, C, seed=130 + i, scale=2.0, shift=-1.0) for i in range(total + 3)]
    # warmup call: pure LayerNorm (eps 1e-6), the BN branch is not run
    np.testing.assert_allclose(m(xs[0]).detach().numpy(), np_layernorm(xs[0].double().numpy()), rtol=1e-5, atol=1e-5)
    assert int(m.norm2.bn.num_batches_tracked) == 0
    for k in range(1, total + 3):
        lam = max(total - (k - 1), 0) / total  # 1 on the first post-warmup call, then linearly to 0
        xn = xs[k].double().numpy()
        want = lam * np_layernorm(xn) + (1 - lam) * (ref_bn(xs[k]).detach().double().numpy())
        np.testing.assert_allclose(m(xs[k]).detach().numpy(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m.running_stat, ref_bn.running_stat)
    assert int(m.iter) == 0 and int(m.warm) == 0
    m2 = PRepBN(C)  # eval mid-schedule (even before any step) is RepBN
    m2.eval()
    torch.testing.assert_close(m2(xs[0]), RepBN(C).eval()(xs[0]))
    assert int(m2.total_step) == 60000 and m2.r0 == 1.0 and m2.norm1.eps == 1e-6
    assert m2(xs[0].bfloat16()).dtype == torch.bfloat16
    m2.train()
    assert m2(xs[0].bfloat16()).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------- bcn
from normlight.norms.bcn import BatchChannelNorm  # noqa: E402


def np_bcn(x, groups, gw, gb, eps=1e-5):
    """BN per channel over (N, positions), then GN per (sample, group) and a per-group affine; channels-last."""
    y = np_bn_train(x, eps)[0]
    N, C = x.shape[0], x.shape[-1]
    g = y.reshape(N, -1, groups, C // groups)
    mean, var = g.mean((1, 3), keepdims=True), g.var((1, 3), keepdims=True)
    z = (g - mean) / np.sqrt(var + eps)
    return (z * gw.reshape(1, 1, groups, 1) + gb.reshape(1, 1, groups, 1)).reshape(x.shape)


@pytest.mark.parametrize("layout", [None, "channels_first"])
def test_bcn_matches_numpy_and_per_group_affine(layout):
    C, G = 8, 4
    m = normlight.create_norm("bcn", C, num_groups=G, layout=layout)
    assert m.weight.shape == (G,) and torch.equal(m.weight, torch.ones(G)) and torch.equal(m.bias, torch.zeros(G))
    with torch.no_grad():
        m.weight.copy_(rand(G, seed=140) + 1)
        m.bias.copy_(rand(G, seed=141))
    x = rand(3, 2, 2, C, seed=142, scale=2.0, shift=1.0)  # channels-last (N, H, W, C)
    xin = x.permute(0, 3, 1, 2) if layout else x
    y = m(xin)
    y = y.permute(0, 2, 3, 1) if layout else y
    want = np_bcn(x.double().numpy(), G, m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-5, atol=1e-5)
    # BN stage: sample 0's output depends on the other samples
    x2 = x.clone()
    x2[1:] *= 3.0
    y2 = m(x2.permute(0, 3, 1, 2) if layout else x2)
    y2 = y2.permute(0, 2, 3, 1) if layout else y2
    assert not torch.allclose(y[0], y2[0], atol=1e-3)


def test_bcn_mask_group_count_error_and_bf16():
    C, G = 4, 2
    x = rand(2, 5, C, seed=150)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    garbage = x.clone()
    garbage[~mask] = -40.0
    y1 = BatchChannelNorm(C, num_groups=G)(x, mask=mask)
    y2 = BatchChannelNorm(C, num_groups=G)(garbage, mask=mask)
    torch.testing.assert_close(y1[mask], y2[mask])
    with pytest.raises(ValueError, match="bcn: num_groups=32 must be a positive divisor of num_features=4"):
        BatchChannelNorm(C)
    assert BatchChannelNorm(C, num_groups=G)(x.bfloat16()).dtype == torch.bfloat16
    m64 = BatchChannelNorm(C, num_groups=G, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: m64(t, mask=mask), (x.double().requires_grad_(),))


# ------------------------------------------------------------------------------------------ evonorm
from normlight.norms.evonorm import EvoNormB0, EvoNormS0  # noqa: E402


def np_evonorm_b0(x, var_batch, v, w, b, eps=1e-3):
    """Channels-last (N, *P, C); instance variance per (sample, channel) over positions."""
    axes = tuple(range(1, x.ndim - 1))
    std_inst = np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return x / np.maximum(np.sqrt(var_batch + eps), v * x + std_inst) * w + b


def test_evonorm_b0_constant_input_and_eval_running_var():
    m = normlight.create_norm("evonorm_b0", 4)
    assert m.replaces_activation and m.uses_batch_statistics and torch.equal(m.v, torch.ones(4))
    y = m(torch.full((2, 3, 3, 4), 3.0))
    torch.testing.assert_close(y, torch.full_like(y, 3.0 / (3.0 + np.sqrt(1e-3))))
    assert abs(float(y[0, 0, 0, 0].detach()) - 0.98957) < 1e-5
    # a real batch: train path, unbiased running update, then eval with that running_var
    m = EvoNormB0(4)
    with torch.no_grad():
        m.v.copy_(rand(4, seed=160))
        m.weight.copy_(rand(4, seed=161) + 1)
        m.bias.copy_(rand(4, seed=162))
    v, w, b = (p.detach().double().numpy() for p in (m.v, m.weight, m.bias))
    x = rand(3, 2, 2, 4, seed=163, scale=2.0)
    xn = x.double().numpy()
    r = xn.reshape(-1, 4)
    np.testing.assert_allclose(m(x).detach().numpy(), np_evonorm_b0(xn, r.var(0), v, w, b), rtol=1e-5, atol=1e-5)
    rv = 0.9 + 0.1 * r.var(0) * 12 / 11
    np.testing.assert_allclose(m.running_var.numpy(), rv, rtol=1e-6)
    m.eval()
    x2 = rand(2, 2, 2, 4, seed=164)
    np.testing.assert_allclose(m(x2).detach().numpy(), np_evonorm_b0(x2.double().numpy(), rv, v, w, b), rtol=1e-5, atol=1e-5)


def test_evonorm_b0_mask_bf16_gradcheck_and_errors():
    x = rand(2, 5, 4, seed=170)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 4:] = False
    garbage = x.clone()
    garbage[~mask] = 9.0
    y1, y2 = EvoNormB0(4)(x, mask=mask), EvoNormB0(4)(garbage, mask=mask)
    torch.testing.assert_close(y1[mask], y2[mask])
    assert EvoNormB0(4)(x.bfloat16()).dtype == torch.bfloat16
    m64 = EvoNormB0(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: m64(t, mask=mask), (x.double().requires_grad_(),))
    with pytest.raises(ValueError, match="evonorm_b0: needs positions"):
        EvoNormB0(4)(rand(3, 4))


def test_evonorm_s0_matches_numpy_and_is_batch_independent():
    C, G = 8, 4
    m = normlight.create_norm("evonorm_s0", C, num_groups=G)
    assert m.replaces_activation and not m.uses_batch_statistics
    with torch.no_grad():
        m.v.copy_(rand(C, seed=180))
        m.weight.copy_(rand(C, seed=181) + 1)
    x = rand(3, 2, 3, C, seed=182, scale=2.0, shift=0.5)
    xn = x.double().numpy()
    g = xn.reshape(3, -1, G, C // G)
    std = np.sqrt(g.var((1, 3), keepdims=True) + 1e-5)
    v, w = m.v.detach().double().numpy(), m.weight.detach().double().numpy()
    gate = xn / (1 + np.exp(-v * xn))
    want = (gate.reshape(g.shape) / std).reshape(xn.shape) * w
    np.testing.assert_allclose(m(x).detach().numpy(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m(x[:1]), m(x)[:1])  # batch-independent
    with pytest.raises(ValueError, match="evonorm_s0: num_groups=32"):
        EvoNormS0(8)
    assert m(x.bfloat16()).dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------- UN
from normlight.norms.unifiednorm import UnifiedNorm  # noqa: E402


class NumpyUN:
    """Unified Normalization (norms.md sec 4) in float64 numpy, one training iteration per ``step``."""

    def __init__(self, C, window, warmup, outlier, t0=0, eps=1e-5, m=0.9):
        self.W, self.warmup, self.outlier, self.eps, self.m, self.t = window, warmup, outlier, eps, m, t0
        self.rv, self.ema = np.ones(C), np.zeros(C)
        self.bx2, self.bgz = np.zeros((window, C)), np.zeros((window, C))
        self.skips = 0

    def step(self, x, dy, w, b):
        self.t += 1
        t, W, eps, m = self.t, self.W, self.eps, self.m
        x2 = (x ** 2).mean(0)
        skip = W <= 1
        recorded = np.sqrt(self.bx2).var(ddof=1)
        self.bx2[t % W] = x2
        gm = lambda a: np.exp(np.log(a).mean(0))  # noqa: E731
        if self.outlier and t >= self.warmup and np.any(self.bx2.mean(0) - gm(self.bx2) > recorded * W):
            self.bx2[t % W] = self.rv
            skip, self.skips = True, self.skips + 1
        var = x2 if (t <= W or t < self.warmup or skip) else gm(self.bx2)
        r = np.sqrt(var + eps) / np.sqrt(self.rv + eps)
        r = np.ones_like(r) if (t <= max(1000, self.warmup) or skip) else np.clip(r, 0.2, 5)
        z = x / np.sqrt(var + eps)
        self.rv = m * self.rv + (1 - m) * var
        g = dy * w * r
        gz = (g * z).mean(0)
        self.bgz[t % W] = self.ema if skip else gz
        mean_gz = gz if (t <= W or t < self.warmup or skip) else self.bgz.mean(0)
        self.ema = m * self.ema + (1 - m) * mean_gz
        dx = (g - (mean_gz if skip else self.ema) * z) / np.sqrt(var + eps)
        return w * z + b, dx, (dy * r * z).sum(0), var


def test_unifiednorm_geometric_mean_window_and_eval_running_var():
    C = 3
    m = normlight.create_norm("unifiednorm", C, warmup_iters=0)
    assert (m.window, m.warmup_iters, m.outlier_filtration, m.momentum, m.eps) == ((4, 4), 0, False, 0.9, 1e-5)
    signs = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]])  # second moment of every channel = 1
    rv = np.ones(C)
    for t, s in enumerate([1, 4, 16, 64, 1, 4, 16], start=1):
        x = signs * np.sqrt(s)
        y = m(x)
        want_var = s if t <= 4 else 8.0  # geometric mean of {1, 4, 16, 64}; arithmetic would be 21.25
        torch.testing.assert_close(y, x / np.sqrt(want_var + 1e-5))
        rv = 0.9 * rv + 0.1 * want_var
    np.testing.assert_allclose(m.running_var.numpy(), rv, rtol=1e-6)
    m.eval()
    x = rand(4, C, seed=190)
    np.testing.assert_allclose(m(x).detach().numpy(), x.double().numpy() / np.sqrt(rv + 1e-5), rtol=1e-5)


@pytest.mark.parametrize("outlier", [False, True])
def test_unifiednorm_forward_backward_buffers_match_numpy(outlier):
    C, W, t0 = 4, 3, 997  # start near t=1000 so the gradient-compensation ratio r becomes active
    m = UnifiedNorm(C, window_size=W, warmup_iters=0, outlier_filtration=outlier)
    ref = NumpyUN(C, W, 0, outlier, t0=t0)
    with torch.no_grad():
        m.iters.fill_(t0)
        m.weight.copy_(rand(C, seed=200) + 1)
        m.bias.copy_(rand(C, seed=201))
        m.buffer_x2.fill_(1.0)
        m.running_var.fill_(1.0)
    ref.bx2[:] = 1.0
    w, b = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
    scales = [1.0, 1.2, 0.8, 1.1, 30.0, 0.9, 1.0, 0.05]  # a spike (30x) and a dip: outliers, r clamps
    for k, s in enumerate(scales):
        x = (rand(5, C, seed=210 + k) * s).double().float().requires_grad_()
        dy = rand(5, C, seed=230 + k)
        m.zero_grad()
        y = m(x)
        (y * dy).sum().backward()
        yn, dx, dw, var = ref.step(x.detach().double().numpy(), dy.double().numpy(), w, b)
        np.testing.assert_allclose(y.detach().numpy(), yn, rtol=2e-5, atol=1e-5)
        np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(m.weight.grad.numpy(), dw, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(m.running_var.numpy(), ref.rv, rtol=1e-5)
        np.testing.assert_allclose(m.ema_gz.numpy(), ref.ema, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(m.buffer_x2.numpy(), ref.bx2, rtol=1e-5)
    assert int(m.skip_counter) == ref.skips
    assert (ref.skips > 0) == outlier  # the spike is filtered only with outlier filtration


def test_unifiednorm_mask_and_bf16():
    x = rand(2, 5, 4, seed=240)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 2:] = False
    garbage = x.clone()
    garbage[~mask] = 77.0
    m1, m2 = UnifiedNorm(4, warmup_iters=0), UnifiedNorm(4, warmup_iters=0)
    dy = rand(2, 5, 4, seed=241)
    y1, y2 = m1(x, mask=mask), m2(garbage, mask=mask)
    torch.testing.assert_close(y1[mask], y2[mask])
    (y1 * dy).sum().backward(), (y2 * dy).sum().backward()
    torch.testing.assert_close(m1.ema_gz, m2.ema_gz)
    np.testing.assert_allclose(m1.batch_stat.numpy(), (x[mask].double().numpy() ** 2).mean(0), rtol=1e-5)
    assert m1(x.bfloat16()).dtype == torch.bfloat16 and torch.isfinite(m1.running_var).all()
    m64 = UnifiedNorm(4, dtype=torch.float64).eval()  # the eval path uses autograd: exact gradient
    assert torch.autograd.gradcheck(m64, (x.double().requires_grad_(),))


# ------------------------------------------------------------------------------- all: init, state
INITS = {  # name, options -> expected initial tensors (parameters 1/0 as in the papers, running stats)
    "batchnorm": ({}, {"weight": 1, "bias": 0, "running_mean": 0, "running_var": 1}),
    "powernorm": ({}, {"weight": 1, "bias": 0, "running_phi": 1, "ema_gz": 0, "iters": 0}),
    "unifiednorm": ({}, {"weight": 1, "bias": 0, "running_var": 1, "ema_gz": 0, "buffer_x2": 0, "buffer_gz": 0}),
    "repbn": ({}, {"alpha": 1, "bn.weight": 1, "bn.bias": 0, "bn.running_var": 1}),
    "prepbn": ({}, {"norm1.weight": 1, "norm1.bias": 0, "norm2.alpha": 1, "warm": 0, "iter": 60000}),
    "bcn": ({"num_groups": 4}, {"weight": 1, "bias": 0, "bn.weight": 1, "bn.bias": 0, "bn.running_var": 1}),
    "evonorm_b0": ({}, {"weight": 1, "bias": 0, "v": 1, "running_var": 1}),
    "evonorm_s0": ({"num_groups": 4}, {"weight": 1, "bias": 0, "v": 1}),
}


@pytest.mark.parametrize("name", sorted(INITS))
def test_init_flags_and_state_dict_round_trip(name):
    options, expected = INITS[name]
    m = normlight.create_norm(name, 8, **options)
    state = m.state_dict()
    for key, value in expected.items():
        assert torch.all(state[key] == value), f"{name}.{key} initial value"
    assert isinstance(m.description, str) and isinstance(m.paper, str)
    assert m.uses_batch_statistics is (name != "evonorm_s0")
    x = rand(4, 3, 8, seed=250)
    m(x).sum().backward()
    if m.uses_batch_statistics:
        assert m.batch_stat.shape == (8,) and m.running_stat.shape == (8,) and not m.batch_stat.requires_grad
    clone = normlight.create_norm(name, 8, **options)
    clone.load_state_dict(m.state_dict())
    clone.eval(), m.eval()
    torch.testing.assert_close(clone(x), m(x))
    torch.testing.assert_close(pickle.loads(pickle.dumps(m))(x), m(x))
    torch.testing.assert_close(copy.deepcopy(m)(x), m(x))
