"""RepBN and progressive LN -> RepBN (PRepBN; Guo et al. 2024, norms.md 14) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normlight
from normlight.norms.repbn import PRepBN, RepBN
from tests.norms.reference import np_bn_train, np_layernorm, rand


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
    m = normlight.create_norm("prepbn", C, total_steps=total, warm=1)
    ref_bn = RepBN(C)
    xs = [rand(3, 2, C, seed=130 + i, scale=2.0, shift=-1.0) for i in range(total + 3)]
    # warmup call: pure LayerNorm (eps 1e-6), the BN branch is not run
    np.testing.assert_allclose(
        m(xs[0]).detach().numpy(), np_layernorm(xs[0].double().numpy(), eps=1e-6), rtol=1e-5, atol=1e-5
    )
    assert int(m.norm2.bn.num_batches_tracked) == 0
    for k in range(1, total + 3):
        lam = max(total - (k - 1), 0) / total  # 1 on the first post-warmup call, then linearly to 0
        xn = xs[k].double().numpy()
        want = lam * np_layernorm(xn, eps=1e-6) + (1 - lam) * (ref_bn(xs[k]).detach().double().numpy())
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


def test_prepbn_blend_spans_the_run_from_the_build_context():
    from normlight.norms.factory import norm_scope

    with norm_scope(total_steps=3, warmup_steps=2):  # the LR warmup is not PRepBN's LayerNorm-only phase
        m = normlight.create_norm("prepbn", 4)
    assert int(m.total_step) == 3 and int(m.warm) == 0 and m.resolved_options() == {"total_steps": 3}
    for k in range(3):
        m(rand(3, 2, 4, seed=150 + k))
    assert int(m.iter) == 0  # lambda reached 0 at the end of the 3-call run: train == eval form
    assert int(normlight.create_norm("prepbn", 4).total_step) == 60000  # no schedule: SLAB's DeiT/Swin value


def test_repbn_inference_affine_uses_eps_at_small_running_var():
    """At running_var 1e-4 the eps (1e-5) changes 1/sqrt(var + eps) by 5%: the affine must include it."""
    C = 4
    m = RepBN(C).eval()
    with torch.no_grad():
        m.bn.running_var.fill_(1e-4)
        m.bn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        m.bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5]))
        m.bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        m.alpha.fill_(0.7)
    x = rand(3, 5, C, seed=121, scale=2.0, shift=1.0)
    xn = x.double().numpy()
    bn = {k: v.double().numpy() for k, v in m.bn.state_dict().items() if v.is_floating_point()}
    inv = bn["weight"] / np.sqrt(bn["running_var"] + 1e-5)
    want_scale, want_shift = inv + 0.7, bn["bias"] - bn["running_mean"] * inv
    scale, shift = m.inference_affine()
    np.testing.assert_allclose(scale.detach().numpy(), want_scale, rtol=1e-6)
    np.testing.assert_allclose(shift.detach().numpy(), want_shift, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        y = m(x).double().numpy()
    np.testing.assert_allclose(y, xn * want_scale + want_shift, rtol=1e-5, atol=1e-5)


def np_masked_repbn(x, mask, eps=1e-5):
    """RepBN in training with alpha 1: BN statistics over the real (mask True) rows only, plus x."""
    real = x[mask]
    return (x - real.mean(0)) / np.sqrt(real.var(0) + eps) + x


def test_repbn_and_prepbn_keep_padded_tokens_out_of_the_statistics():
    C = 5
    x = rand(3, 4, C, seed=122, scale=2.0, shift=1.0)
    x[:, -1] = 40.0  # padding far from the data: it would dominate the statistics if counted
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[:, -1] = False
    xn, mn = x.double().numpy(), mask.numpy()
    np.testing.assert_allclose(RepBN(C)(x, mask=mask).detach().numpy(), np_masked_repbn(xn, mn), rtol=1e-5, atol=1e-4)
    m = PRepBN(C, total_steps=2, r0=0.5)  # first call: lambda = r0 * 2 / 2 = 0.5
    with torch.no_grad():  # a non-trivial LayerNorm affine: the LN branch must use it
        m.norm1.weight.copy_(torch.linspace(0.5, 1.5, C))
        m.norm1.bias.copy_(torch.linspace(-0.3, 0.3, C))
    want = 0.5 * np_layernorm(
        xn, eps=1e-6, w=m.norm1.weight.detach().double().numpy(), b=m.norm1.bias.detach().double().numpy()
    )
    want = want + 0.5 * np_masked_repbn(xn, mn)
    np.testing.assert_allclose(m(x, mask=mask).detach().numpy(), want, rtol=1e-5, atol=1e-4)


def test_prepbn_defaults_options_and_bad_schedules():
    m = PRepBN(6)
    assert int(m.warm) == 0 and m.warm.dtype == m.iter.dtype == m.total_step.dtype == torch.long
    assert m.norm2.bn.sync_stats and m.norm2.bn.eps == 1e-5 and m.norm2.bn.momentum == 0.1
    assert RepBN(6).bn.sync_stats
    m = PRepBN(6, total_steps=1, warm=0, eps=1e-3, momentum=0.2, sync_stats=False, dtype=torch.float64)
    assert int(m.total_step) == 1 and m.norm2.bn.eps == 1e-3 and m.norm2.bn.momentum == 0.2
    assert not m.norm2.bn.sync_stats
    assert {p.dtype for p in m.parameters()} == {torch.float64}
    for bad in ({"total_steps": 0}, {"warm": -1}):
        with pytest.raises(ValueError, match="prepbn: total_steps must be >= 1 and warm >= 0"):
            PRepBN(6, **bad)
    warm = PRepBN(6, warm=1)  # the LayerNorm warmup call keeps a bf16 input bf16
    assert warm(rand(2, 3, 6, seed=123).bfloat16()).dtype == torch.bfloat16 and int(warm.warm) == 0


def test_prepbn_repr_and_device_reach_every_part():
    assert PRepBN(6, total_steps=10, warm=2, r0=0.5).extra_repr() == "r0=0.5, warm=2, iter=10, total_step=10"
    m = PRepBN(6, device="meta")  # no data: only where each parameter and buffer was created
    assert {t.device.type for t in [*m.parameters(), *m.buffers()]} == {"meta"}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("fast_path", [True, False])
def test_repbn_and_prepbn_report_a_wrong_width_or_mask_under_their_own_name(fast_path, training):
    from normlight.norms.fast import set_fast_norms

    rep, prep = RepBN(6).train(training), PRepBN(6, total_steps=10).train(training)
    set_fast_norms(rep, fast_path), set_fast_norms(prep, fast_path)
    with pytest.raises(ValueError, match=r"^repbn: .*\b6\b.*\(4, 5, 8\)"):
        rep(torch.randn(4, 5, 8))
    x, bad_mask = torch.randn(4, 5, 6), torch.ones(4, 3, dtype=torch.bool)
    for m, name in ((rep, "repbn"), (prep, "prepbn")):  # a mask of the wrong shape, in eval too
        with pytest.raises(ValueError, match=rf"^{name}: .*mask"):
            m(x, mask=bad_mask)


@pytest.mark.parametrize("fast_path", [True, False])
def test_repbn_bf16_module_eval_uses_its_running_variance_in_float32(fast_path):
    # eval of a bf16 module: the stored (bf16) running variance enters sqrt(var + eps) in float32
    from normlight.norms.fast import set_fast_norms

    m = RepBN(4, eps=1e-3, dtype=torch.bfloat16).eval()
    set_fast_norms(m, fast_path)
    with torch.no_grad():
        m.bn.running_var.copy_(torch.tensor([1e-3, 1e-2, 1.0, 3.0]))
        m.bn.running_mean.copy_(torch.tensor([0.5, -1.0, 0.0, 2.0]))
    rv, rm = m.bn.running_var.double().numpy(), m.bn.running_mean.double().numpy()
    x = rand(3, 5, 4, seed=320)
    xd = x.double().numpy()
    np.testing.assert_allclose(m(x).detach().numpy(), (xd - rm) / np.sqrt(rv + 1e-3) + xd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fast_path", [True, False])
def test_prepbn_normalizes_a_bf16_input_in_float32_mid_blend(fast_path):
    # mid-schedule (lambda 0.5) with trained LN and BN parameters: both branches in float32, one rounding at the end
    from normlight.norms.fast import set_fast_norms

    m = PRepBN(16, total_steps=2)
    set_fast_norms(m, fast_path)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        m.iter.fill_(1)  # lambda = r0 * 1 / 2
    wide = PRepBN(16, total_steps=2, dtype=torch.float64)
    wide.load_state_dict(m.state_dict())
    set_fast_norms(wide, fast_path)
    x = (torch.randn(4, 6, 16, generator=g) * 3 + 0.5).bfloat16()
    y, want = m(x).double(), wide(x.double())
    assert ((y - want).abs() <= 2**-8 * want.abs() + 1e-5 * want.abs().max()).all()
