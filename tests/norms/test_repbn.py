"""RepBN and progressive LN -> RepBN (PRepBN; Guo et al. 2024, norms.md 14) against numpy."""

from __future__ import annotations

import numpy as np
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
