"""Dynamic Tanh (Zhu et al. 2025): formula, init and the single scalar alpha; alpha_init="auto"."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import normlight
from normlight.norms import _fast_token
from normlight.norms.dyt import DyT
from tests.norms.reference import build, np_dyt, randn, run


def test_dyt_formula_init_and_scalar_alpha():
    d = 10
    m = build("dyt", d, alpha_init=0.5)  # the paper's default
    x = np.ones((1, d))
    np.testing.assert_allclose(run(m, x, torch.float64), np.full((1, d), 0.462117), atol=1e-6)  # tanh(0.5)
    np.testing.assert_allclose(run(m, np.full((1, d), 100.0), torch.float64), 1.0, atol=1e-12)  # no centering
    assert m.alpha.shape == (1,) and sum(p.numel() for p in m.parameters()) == 1 + 2 * d
    assert sum(p.numel() for p in build("dyt", d, bias=False, alpha_init=0.5).parameters()) == 1 + d
    w, b = randn(d, seed=12), randn(d, seed=13)
    m = build("dyt", d, alpha_init=0.8, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w)), m.bias.copy_(torch.from_numpy(b))
    x = randn(2, 3, d, seed=14, scale=3)
    np.testing.assert_allclose(run(m, x, torch.float64), w * np.tanh(0.8 * x) + b, rtol=1e-12)


def test_dyt_auto_alpha_is_one_over_the_std_of_the_first_training_batch():
    d = 16
    m = build("dyt", d)  # default: alpha_init="auto"
    x1, x2 = randn(4, 5, d, seed=20, scale=0.03, shift=0.01), randn(4, 5, d, seed=21, scale=5.0)
    m.eval()
    np.testing.assert_allclose(run(m, x1, torch.float64), np.tanh(0.5 * x1), rtol=1e-6)  # before training: 0.5
    assert bool(m.alpha_pending)
    m.train()
    alpha = 1.0 / x1.std()  # numpy: population std over all elements
    np.testing.assert_allclose(run(m, x1, torch.float64), np.tanh(alpha * x1), rtol=1e-5)
    np.testing.assert_allclose(m.alpha.item(), alpha, rtol=1e-5)
    run(m, x2, torch.float64)  # only the first training forward sets alpha
    np.testing.assert_allclose(m.alpha.item(), alpha, rtol=1e-5)
    assert not bool(m.alpha_pending)
    # the flag travels with the weights: a resumed model keeps its alpha; old checkpoints (no flag) count as set
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = DyT(d)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    fresh.train()
    run(fresh, x2, torch.float64)
    np.testing.assert_allclose(fresh.alpha.item(), alpha, rtol=1e-5)
    old = {k: v for k, v in m.state_dict().items() if k != "alpha_pending"}
    legacy = DyT(d)
    legacy.load_state_dict(old)
    run(legacy.train(), x2, torch.float64)
    np.testing.assert_allclose(legacy.alpha.item(), alpha, rtol=1e-5)


def test_dyt_checkpoint_saved_before_training_still_sets_alpha_on_the_first_training_forward():
    d = 8
    saved = DyT(d).state_dict()  # alpha_pending is True: no training forward yet
    m = DyT(d, alpha_init=0.5)  # a number: nothing pending until the checkpoint says so
    m.load_state_dict(saved)
    x = randn(3, 4, d, seed=22, scale=4.0)
    run(m.train(), x, torch.float64)
    np.testing.assert_allclose(m.alpha.item(), 1.0 / x.std(), rtol=1e-5)


def test_dyt_rejects_an_alpha_init_that_is_not_a_number_or_auto():
    with pytest.raises(ValueError, match=r"dyt: alpha_init must be a number or 'auto', got 'bad'"):
        DyT(4, alpha_init="bad")


def test_dyt_print_shows_its_options():
    assert repr(DyT(6, alpha_init=0.5, bias=False)) == "DyT(6, alpha_init=0.5, bias=False)"
    assert repr(DyT(6)) == "DyT(6, alpha_init=auto, bias=True)"


@pytest.mark.parametrize("path", ["eager", "compiled bodies"])
@pytest.mark.parametrize("bias", [True, False])
def test_dyt_fast_path_forward_and_gradients_match_numpy(kernel_calls, path, bias):
    # both fast bodies: the eager one (fused sigmoid passes) and the tensor-only one compile_norms traces,
    # run eagerly here (kernel_calls); float64, inputs reaching the saturated tails (|alpha x| up to ~12)
    d = 6
    m = build("dyt", d, alpha_init=1.3, bias=bias, dtype=torch.float64)
    w, b = randn(d, seed=30), randn(d, seed=31) if bias else np.zeros(d)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
        if bias:
            m.bias.copy_(torch.from_numpy(b))
    if path == "compiled bodies":
        normlight.compile_norms(m)
    x_np, dy_np = randn(2, 3, d, seed=32, scale=4.0), randn(2, 3, d, seed=33)
    x = torch.from_numpy(x_np).requires_grad_()
    y = m(x)
    y.backward(torch.from_numpy(dy_np))
    assert {k for k, _ in kernel_calls} == ({"dyt_fwd", "dyt_bwd"} if path == "compiled bodies" else set())
    want_y, want_dx, want_da, want_dw, want_db = np_dyt(x_np, dy_np, 1.3, w, b)
    np.testing.assert_allclose(y.detach().numpy(), want_y, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(x.grad.numpy(), want_dx, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(m.alpha.grad.numpy(), [want_da], rtol=1e-10)
    np.testing.assert_allclose(m.weight.grad.numpy(), want_dw, rtol=1e-10, atol=1e-13)
    if bias:
        np.testing.assert_allclose(m.bias.grad.numpy(), want_db, rtol=1e-12)
    else:
        assert m.bias is None


def test_dyt_fused_sigmoid_is_exact_where_the_sigmoid_saturates():
    # the eager fast path's g * sigmoid(beta x) returns g itself above a per-dtype threshold, where the sigmoid
    # rounds to 1 (float32 from 20, float64 from 40): the correctly rounded product is g there; below it the
    # product is computed (float64: 1 - sigmoid(25) = 1.4e-11 must show)
    for dtype, lo, hi in ((torch.float32, 20.05, 40.0), (torch.float64, 40.05, 41.0)):
        g = torch.from_numpy(randn(20000, seed=34, scale=3.0)).to(dtype)
        bx = torch.linspace(lo, hi, 20000, dtype=dtype)
        assert torch.equal(_fast_token._gsigmoid(g, bx, 1.0), g), dtype
        assert torch.equal(_fast_token._gsigmoid(g, bx / 2, 2.0), g), dtype
    g, bx = randn(1000, seed=35), np.linspace(20.05, 32.0, 1000)
    got = _fast_token._gsigmoid(torch.from_numpy(g), torch.from_numpy(bx), 1.0).numpy()
    np.testing.assert_allclose(got, g / (1 + np.exp(-bx)), rtol=1e-15, atol=0)
