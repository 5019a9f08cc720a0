"""EvoNorm-B0 and EvoNorm-S0 (Liu et al. 2020, norms.md 12) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normlight
from normlight.norms.evonorm import EvoNormB0, EvoNormS0
from tests.norms.reference import np_evonorm_b0, rand


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
    np.testing.assert_allclose(
        m(x2).detach().numpy(), np_evonorm_b0(x2.double().numpy(), rv, v, w, b), rtol=1e-5, atol=1e-5
    )


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


def test_evonorm_s0_with_one_group_takes_the_variance_over_all_channels():
    C = 6
    m = EvoNormS0(C, num_groups=1, eps=1e-5)
    with torch.no_grad():
        m.v.copy_(rand(C, seed=183))
    x = rand(2, 4, C, seed=184, scale=2.0, shift=0.5)
    xn, v = x.double().numpy(), m.v.detach().double().numpy()
    std = np.sqrt(xn.var(axis=(1, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(m(x).detach().numpy(), xn / (1 + np.exp(-v * xn)) / std, rtol=1e-5, atol=1e-6)


def test_evonorm_s0_mask_keeps_padding_out_of_the_group_variance():
    C, G = 8, 2
    m = EvoNormS0(C, num_groups=G)
    x = rand(2, 6, C, seed=185, scale=2.0)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 3:] = False
    garbage = x.clone()
    garbage[~mask] = 50.0
    y = m(garbage, mask=mask)
    torch.testing.assert_close(y[0, :3], m(x[:1, :3])[0])  # sample 0 as if its padding were never there
    torch.testing.assert_close(y[1], m(x[1:])[0])


def test_evonorm_b0_has_no_batch_statistic_before_its_first_training_forward():
    m = EvoNormB0(4)
    assert m.batch_stat is None
    x = rand(3, 5, 4, seed=186)
    m.train()(x)
    np.testing.assert_allclose(m.batch_stat.numpy(), x.reshape(-1, 4).double().numpy().var(0), rtol=1e-5)


@pytest.mark.parametrize("fast_path", [True, False])
def test_evonorm_b0_bf16_module_eval_uses_its_running_variance_in_float32(fast_path):
    # eval of a bf16 module: the stored (bf16) running variance enters sqrt(var + eps) in float32
    from normlight.norms.fast import set_fast_norms

    m = EvoNormB0(4, dtype=torch.bfloat16).eval()
    set_fast_norms(m, fast_path)
    with torch.no_grad():
        m.running_var.copy_(torch.tensor([1e-3, 1e-2, 1.0, 3.0]))
    x = rand(2, 5, 4, seed=300)
    rv = m.running_var.double().numpy()
    want = np_evonorm_b0(x.double().numpy(), rv, np.ones(4), np.ones(4), np.zeros(4))
    np.testing.assert_allclose(m(x).detach().numpy(), want, rtol=1e-6, atol=1e-7)
    assert EvoNormB0(4).sync_stats is True  # batch statistics summed over data-parallel ranks unless turned off


@pytest.fixture
def fused_calls(monkeypatch) -> list:
    """The input shapes of every call of torch's fused statistics kernel (``batch_norm_update_stats``)."""
    calls = []
    fused = torch.batch_norm_update_stats

    def counting(*args):
        calls.append(args[0].shape)
        return fused(*args)

    monkeypatch.setattr(torch, "batch_norm_update_stats", counting)
    return calls


def test_evonorm_s0_group_statistics_use_the_fused_kernel_eagerly_and_plain_passes_when_traced(
    monkeypatch, fused_calls
):
    # eagerly on CPU, per-channel statistics come from torch's one-pass fused kernel (the fast choice); inside a
    # traced graph (told so here; the compiler itself is not run) two plain passes that inductor fuses
    m = normlight.create_norm("evonorm_s0", 8, num_groups=2)
    fused_calls.clear()  # the build's one-time probe is not the forward under test
    x = torch.randn(3, 5, 8)
    eager = m(x)
    assert fused_calls == [(5, 8)] * 3  # one call per sample
    fused_calls.clear()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    torch.testing.assert_close(m(x), eager)
    assert not fused_calls


def test_evonorm_b0_instance_statistics_use_the_fused_kernel_eagerly_and_plain_passes_compiled(
    fused_calls, kernel_calls
):
    # eagerly on CPU without a mask, per-sample statistics come from torch's fused kernel (one call per sample);
    # with compile_norms (kernels run eagerly here) from the instance_moments kernel, which the compiler fuses
    m = normlight.create_norm("evonorm_b0", 8)
    fused_calls.clear()  # the build's one-time probe is not the forward under test
    x = torch.randn(3, 5, 8)
    eager = m(x)
    assert fused_calls == [(5, 8)] * 3 and ("instance_moments", False) not in kernel_calls
    fused_calls.clear()
    normlight.compile_norms(m)
    torch.testing.assert_close(m(x), eager)
    assert not fused_calls and ("instance_moments", True) in kernel_calls
