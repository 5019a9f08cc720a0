"""Unified Normalization (Yang et al. 2022, norms.md 4): geometric-mean window, gradient compensation, vs numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normlight
from normlight.norms.fast import set_fast_norms
from normlight.norms.unifiednorm import UnifiedNorm
from tests.norms.reference import NumpyUN, rand


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


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("outlier", [False, True])
@pytest.mark.parametrize("schedule", [False, True, "warmup"], ids=["reference-1000", "schedule-1pct", "warmup-6"])
def test_unifiednorm_forward_backward_buffers_match_numpy(outlier, schedule, fast_path):
    C, W = 4, 3
    warmup = 6 if schedule == "warmup" else 0
    if schedule == "warmup":  # a warm-up longer than the window: steps 4-5 still use batch statistics, 6 on not
        m = UnifiedNorm(C, window_size=W, warmup_iters=warmup, outlier_filtration=outlier)
        t0, ratio_warmup = 0, 1000
    elif schedule:  # a 300-step run: the ratio r turns on after 1% of it (3 calls), not after the reference's 1000
        m = normlight.create_norm(
            "unifiednorm", C, window_size=W, outlier_filtration=outlier, warmup_iters=0, total_steps=300
        )
        t0, ratio_warmup = 0, 3
        assert m.ratio_warmup_iters == 3
    else:  # start near t=1000 so the gradient-compensation ratio r becomes active
        m = UnifiedNorm(C, window_size=W, warmup_iters=0, outlier_filtration=outlier)
        t0, ratio_warmup = 997, 1000
    set_fast_norms(m, fast_path)  # both the fast path and the reference UNFunction against numpy
    ref = NumpyUN(C, W, warmup, outlier, t0=t0, ratio_warmup=ratio_warmup)
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
    # the spike is filtered only with outlier filtration, and only after the warm-up (step 5 is inside warm-up 6)
    assert (ref.skips > 0) == (outlier and warmup == 0)


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


def test_unifiednorm_warmups_follow_the_schedule_context():
    m = normlight.create_norm("unifiednorm", 4, warmup_steps=30, total_steps=400)
    assert m.resolved_options() == {"warmup_iters": 30, "ratio_warmup_iters": 4}
    plain = normlight.create_norm("unifiednorm", 4)
    assert (plain.warmup_iters, plain.ratio_warmup_iters) == (4000, 1000)  # the reference's constants
    assert plain.sync_stats is True  # statistics summed over data-parallel ranks unless turned off
    explicit = normlight.create_norm("unifiednorm", 4, warmup_iters=5, ratio_warmup_iters=6, warmup_steps=30)
    assert (explicit.warmup_iters, explicit.ratio_warmup_iters) == (5, 6)


def test_unifiednorm_messages_print_and_first_batch_statistic():
    with pytest.raises(ValueError, match=r"^unifiednorm: warmup_iters and ratio_warmup_iters must be >= 0, got -1, 3$"):
        UnifiedNorm(4, warmup_iters=-1, ratio_warmup_iters=3)
    with pytest.raises(ValueError, match=r"must be >= 0, got 3, -1$"):
        UnifiedNorm(4, warmup_iters=3, ratio_warmup_iters=-1)
    for bad in (0, (2, 0), (1, 2, 3)):
        with pytest.raises(ValueError, match=r"^unifiednorm: window_size must be a positive int or a \(forward, back"):
            UnifiedNorm(4, window_size=bad)
    m = UnifiedNorm(4, window_size=(3, 2), warmup_iters=5, ratio_warmup_iters=6, outlier_filtration=True, eps=1e-4)
    assert tuple(m.buffer_x2.shape) == (3, 4) and tuple(m.buffer_gz.shape) == (2, 4)
    shown = "4, window=(3, 2), warmup_iters=5, ratio_warmup_iters=6, outlier_filtration=True, eps=0.0001, momentum=0.9"
    assert repr(m).endswith(f"({shown})")
    assert m.batch_stat is None  # nothing measured before the first training forward
    x = rand(3, 5, 4, seed=242)
    m.train()(x)
    np.testing.assert_allclose(m.batch_stat.numpy(), (x.reshape(-1, 4).double().numpy() ** 2).mean(0), rtol=1e-5)


def test_unifiednorm_option_edges_and_the_ratio_warmup_from_the_run_length():
    assert normlight.create_norm("unifiednorm", 4, total_steps=50).ratio_warmup_iters == 1  # at least one step
    assert normlight.create_norm("unifiednorm", 4, total_steps=150).ratio_warmup_iters == 2  # 1% of 150, rounded
    assert UnifiedNorm(4, ratio_warmup_iters=0).ratio_warmup_iters == 0  # compensation from the first step
    assert UnifiedNorm(4, window_size=1).window == (1, 1)  # no smoothing window


@pytest.mark.parametrize("fast_path", [True, False])
def test_unifiednorm_eval_adds_eps_to_a_small_running_variance(fast_path):
    m = UnifiedNorm(4, eps=1e-3).eval()
    set_fast_norms(m, fast_path)
    rv = np.array([1e-4, 1e-3, 1e-2, 1.0])
    with torch.no_grad():
        m.running_var.copy_(torch.from_numpy(rv))
    x = rand(3, 4, seed=243)
    want = x.double().numpy() / np.sqrt(rv + 1e-3)
    np.testing.assert_allclose(m(x).detach().numpy(), want, rtol=1e-5)


def run_against_numpy(m, ref, scales, seed, signs=False):
    """Train ``m`` for ``len(scales)`` steps next to the numpy reference ``ref``; compare outputs, grads, buffers."""
    C = m.num_features
    w, b = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
    for k, s in enumerate(scales):
        x = torch.tensor([[1.0, -1.0] * (C // 2), [-1.0, 1.0] * (C // 2)]) if signs else rand(5, C, seed=seed + k)
        x = (x * torch.tensor(s)).requires_grad_()
        dy = rand(x.shape[0], C, seed=seed + 50 + k)
        m.zero_grad()
        y = m(x)
        (y * dy).sum().backward()
        yn, dx, dw, _ = ref.step(x.detach().double().numpy(), dy.double().numpy(), w, b)
        np.testing.assert_allclose(y.detach().numpy(), yn, rtol=2e-5, atol=1e-5)
        np.testing.assert_allclose(x.grad.numpy(), dx, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(m.weight.grad.numpy(), dw, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(m.running_var.numpy(), ref.rv, rtol=1e-5)
        np.testing.assert_allclose(m.ema_gz.numpy(), ref.ema, rtol=1e-4, atol=1e-6)
    assert int(m.skip_counter) == ref.skips


EDGE_CASES = {  # name -> (options, second-moment scale per step (scalar or per channel), window prefill or None)
    # a window of one: every step skips (no smoothing, r = 1, the step's own mean(g * z) compensates)
    "window-1": (dict(window_size=1), [1.0, 2.0, 0.5, 3.0, 1.0], None),
    # a large eps: inside both roots of the ratio r
    "eps-0.5": (dict(window_size=2, eps=0.5), [1.0, 2.0, 0.5, 3.0, 1.0], None),
    # a jump whose ratio r exceeds the clamp's upper bound 5 (and a dip below 1/5)
    "ratio-above-5": (dict(window_size=2), [1.0, 1.0, 1000.0, 1.0, 0.001, 1.0], None),
    # outlier filtration on a window of identical statistics: AM - GM = 0 = recorded, not an outlier
    "constant-window": (dict(window_size=3, outlier_filtration=True), [1.0] * 5, [1.0] * 4),
    # steady channels of very different size: AM - GM is per channel (0 here), not against the mean of all
    "channel-scales": (dict(window_size=3, outlier_filtration=True), [[10.0, 10.0, 10.0, 1.0]] * 4, [100, 100, 100, 1]),
    # a spike at the very step the warm-up ends: filtration is on from t = warmup_iters
    "outlier-at-warmup": (dict(window_size=3, outlier_filtration=True, warmup_iters=5), [1, 1.2, 0.8, 1.1, 30], None),
}


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_unifiednorm_window_edges_match_numpy(case, fast_path):
    C = 4
    opts, scales, prefill = EDGE_CASES[case]
    opts = {"warmup_iters": 0, "ratio_warmup_iters": 0, **opts}
    m = UnifiedNorm(C, **opts)
    set_fast_norms(m, fast_path)
    ref = NumpyUN(C, m.window[0], m.warmup_iters, m.outlier_filtration, eps=m.eps, ratio_warmup=0)
    with torch.no_grad():
        m.weight.copy_(rand(C, seed=250) + 1)
        m.bias.copy_(rand(C, seed=251))
        if prefill is not None:  # exact second moments (signs times the scale): log / exp stay exact
            m.buffer_x2.copy_(torch.tensor(prefill, dtype=torch.float32).expand_as(m.buffer_x2))
            ref.bx2[:] = prefill
    run_against_numpy(m, ref, scales, 260, signs=prefill is not None)
    if case == "window-1":  # skipping by window size is not counted as an outlier
        assert int(m.skip_counter) == 0
    if case == "outlier-at-warmup":
        assert ref.skips == 1


def test_unifiednorm_forward_window_is_the_first_of_the_pair():
    # window_size=(forward, backward): the geometric mean runs over the forward window (4 here), not the backward
    m = UnifiedNorm(3, window_size=(4, 2), warmup_iters=0)
    signs = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]])
    for t, s in enumerate([1, 4, 16, 64, 1], start=1):
        y = m(signs * np.sqrt(s))
    torch.testing.assert_close(y, signs / np.sqrt(8.0 + 1e-5))  # geometric mean of {1, 4, 16, 64}


@pytest.mark.parametrize("fast_path", [True, False])
def test_unifiednorm_bf16_module_normalizes_by_the_statistic_it_stores(fast_path):
    # a bf16 module keeps its window and running variance in bf16: the training normalizer is the stored
    # (bf16-rounded) statistic, in float32 for a float32 input, so later steps and eval see what this step used
    m = UnifiedNorm(4, warmup_iters=0, window_size=1, dtype=torch.bfloat16)
    set_fast_norms(m, fast_path)
    x = rand(6, 4, seed=270).requires_grad_()
    dy = rand(6, 4, seed=271)
    y = m(x)
    assert y.dtype == torch.float32
    stored = m.buffer_x2[0].double()
    np.testing.assert_allclose(stored.numpy(), (x.detach().double().numpy() ** 2).mean(0), rtol=1e-2)
    xn, dyn = x.detach().double().numpy(), dy.double().numpy()
    z = xn / np.sqrt(stored.numpy() + 1e-5)
    np.testing.assert_allclose(y.detach().numpy(), z, rtol=1e-6, atol=1e-6)
    (y * dy).sum().backward()
    # window 1: every step skips, r = 1 and the compensation is this step's mean(g * z), stored in bf16
    gz = torch.from_numpy((dyn * z).mean(0)).bfloat16().double().numpy()
    np.testing.assert_allclose(x.grad.numpy(), (dyn - gz * z) / np.sqrt(stored.numpy() + 1e-5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fast_path", [True, False])
def test_unifiednorm_bf16_module_eval_normalizes_in_float32(fast_path):
    # eval of a bf16 module: running_var (bf16) + eps in float32; in bf16, eps (1e-5) would vanish next to 1
    m = UnifiedNorm(4, eps=1e-3, dtype=torch.bfloat16).eval()
    set_fast_norms(m, fast_path)
    rv = np.array([1e-3, 1e-2, 1.0, 3.0])
    with torch.no_grad():
        m.running_var.copy_(torch.from_numpy(rv))
    rv = m.running_var.double().numpy()  # the stored bf16 values
    x = rand(3, 4, seed=272)
    np.testing.assert_allclose(m(x).detach().numpy(), x.double().numpy() / np.sqrt(rv + 1e-3), rtol=1e-6)
