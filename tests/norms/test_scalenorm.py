"""ScaleNorm (Nguyen & Salazar 2019) and the unit L2 norm (nGPT) against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.norms.reference import build, randn, run


def test_scalenorm_init_equals_eps_free_rmsnorm_and_g_is_one_scalar():
    d = 20
    m = build("scalenorm", d, dtype=torch.float64)
    assert [p.numel() for p in m.parameters()] == [1] and m.g.item() == pytest.approx(math.sqrt(d))
    x = randn(4, d, seed=10)
    np.testing.assert_allclose(run(m, x, torch.float64), x / np.sqrt((x**2).mean(-1, keepdims=True)), rtol=1e-10)


def test_scalenorm_eps_is_a_clamp_not_additive():
    d = 4
    x = np.full((1, d), 1e-6 / 2)  # ||x|| = 1e-6 < eps = 1e-5
    y = run(build("scalenorm", d), x, torch.float64)
    g = math.sqrt(d)
    np.testing.assert_allclose(y, g * x / 1e-5, rtol=1e-10)
    assert np.abs(y / (g * x / (1e-6 + 1e-5)) - 1).max() > 0.05  # additive eps is 10% off


def test_l2norm_unit_norm_and_zero_vector_policy():
    x = randn(3, 9, seed=11, scale=5)
    y = run(build("l2norm", 9), x, torch.float64)
    np.testing.assert_allclose(y, x / np.linalg.norm(x, axis=-1, keepdims=True), rtol=1e-12)
    zero = torch.zeros(1, 9)
    assert torch.isnan(build("l2norm", 9)(zero)).all()  # eps=0 as nGPT: documented NaN
    assert torch.equal(build("l2norm", 9, eps=1e-12)(zero), zero)  # with a clamp zero stays zero
    assert len(list(build("l2norm", 9).parameters())) == 0


def test_l2norm_reference_code_clamps_with_eps_too():
    from normlight.norms.fast import set_fast_norms

    m = build("l2norm", 4, eps=0.5)
    set_fast_norms(m, False)
    x = np.array([[0.1, 0.2, 0.0, 0.2], [3.0, 0.0, 4.0, 0.0]])  # norms 0.3 (below eps) and 5
    np.testing.assert_allclose(run(m, x, torch.float64), [x[0] / 0.5, x[1] / 5.0], rtol=1e-12)


def test_l2norm_rejects_a_negative_eps():
    # the factory reports the plugin's own message (the user's error line) after naming the plugin
    with pytest.raises(TypeError, match=r"'l2norm'.*rejected options.*l2norm eps must be >= 0 .*got -1"):
        build("l2norm", 4, eps=-1.0)
