"""PowerNorm (Shen et al. 2020, norms.md 3): running phi, ema_gz, warmup and the approximate backward vs numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normlight.norms.powernorm import PowerFunction, PowerNorm
from tests.norms.reference import np_group_scaling, np_powernorm_step, rand


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
        yn, phi, ema, _, dw, db, psi2 = np_powernorm_step(
            xg, dy.double().numpy().reshape(-1, C), w, b, phi, ema, t, warmup
        )
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
    yn, phin, eman, dx, dw, db, _ = np_powernorm_step(
        x.detach().numpy(), dy.numpy(), w.detach().numpy(), b.detach().numpy(), phi0, ema0, t, warmup
    )
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
    torch.testing.assert_close(m(x2), x2 / torch.sqrt(phi + 1e-5) / torch.sqrt((x2**2).mean(-1, keepdim=True) + 1e-5))
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
    np.testing.assert_allclose(m1.batch_stat.numpy(), (xg**2).mean(0), rtol=1e-5)
    assert m1(x.bfloat16()).dtype == torch.bfloat16 and torch.isfinite(m1.running_phi).all()
    # the true-gradient parts (GroupScaling and the eval path) pass gradcheck
    m64 = PowerNorm(C, group_num=2, dtype=torch.float64).eval()
    assert torch.autograd.gradcheck(m64, (x.double().requires_grad_(),))
    with pytest.raises(ValueError, match="powernorm.*group_num=4.*num_features=6"):
        PowerNorm(C, group_num=4)


def test_powernorm_defaults_follow_the_fairseq_recipe_from_the_build_context():
    import normlight

    C = 8
    m = normlight.create_norm("powernorm", C, num_heads=4, warmup_steps=2, site="mlp_in")
    assert (m.group_num, m.warmup_iters) == (4, 2) and m.resolved_options() == {"group_num": 4, "warmup_iters": 2}
    assert normlight.create_norm("powernorm", C, num_heads=4, site="qk").group_num == 1  # inside a head: no groups
    assert normlight.create_norm("powernorm", C, num_heads=3).group_num == 1  # heads do not divide C
    plain = normlight.create_norm("powernorm", C)
    assert (plain.group_num, plain.warmup_iters) == (1, 10000)  # no context: the reference class defaults
    explicit = normlight.create_norm("powernorm", C, group_num=2, warmup_iters=7, num_heads=4, warmup_steps=2)
    assert (explicit.group_num, explicit.warmup_iters) == (2, 7)
    # the context-built norm IS the explicit one (numpy-checked above): same outputs across the end of warmup
    ref = PowerNorm(C, group_num=4, warmup_iters=2)
    for t in range(4):
        x = rand(3, 4, C, seed=300 + t, scale=2.0)
        torch.testing.assert_close(m(x), ref(x))
    assert not torch.allclose(plain(x), m(x))  # still in warmup with the fallback 10000


def test_powernorm_messages_print_and_first_batch_statistic():
    with pytest.raises(ValueError, match=r"^powernorm: warmup_iters must be >= 0, got -1$"):
        PowerNorm(4, warmup_iters=-1)
    with pytest.raises(ValueError, match=r"^powernorm: group_num=0 must be a positive divisor of num_features=4$"):
        PowerNorm(4, group_num=0)
    assert PowerNorm(4, warmup_iters=0).warmup_iters == 0  # no warm-up: running statistics from the first step
    m = PowerNorm(4, group_num=2, warmup_iters=3, alpha_fwd=0.8, alpha_bkw=0.7, eps=1e-4, sync_stats=False)
    shown = "4, group_num=2, warmup_iters=3, alpha_fwd=0.8, alpha_bkw=0.7, eps=0.0001, sync_stats=False"
    assert repr(m).endswith(f"({shown})")
    assert m.batch_stat is None  # nothing measured before the first training forward
    x = rand(3, 5, 4, seed=310)
    m.train()(x)
    np.testing.assert_allclose(
        m.batch_stat.numpy(), (np_group_scaling(x.double().numpy(), 2) ** 2).reshape(-1, 4).mean(0), rtol=1e-5
    )


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("fast_path", [True, False])
def test_powernorm_bf16_module_uses_its_running_estimate_in_float32(fast_path, training):
    # after warmup (and in eval) a bf16 module normalizes by its stored (bf16) running_phi, + eps in float32
    from normlight.norms.fast import set_fast_norms

    m = PowerNorm(4, group_num=1, warmup_iters=0, eps=1e-3, dtype=torch.bfloat16).train(training)
    set_fast_norms(m, fast_path)
    with torch.no_grad():
        m.running_phi.copy_(torch.tensor([1e-3, 1e-2, 1.0, 3.0]))
    phi = m.running_phi.double().numpy()  # the stored bf16 values, read before the step updates them
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(310))
    xd = x.double().numpy()
    xs = xd / np.sqrt((xd**2).mean(-1, keepdims=True) + 1e-5)  # GroupScaling with one group
    np.testing.assert_allclose(m(x).detach().numpy(), xs / np.sqrt(phi + 1e-3), rtol=1e-6, atol=1e-7)
    assert PowerNorm(4).sync_stats is True  # statistics summed over data-parallel ranks unless turned off
