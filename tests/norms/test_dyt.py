"""Dynamic Tanh (Zhu et al. 2025): formula, init and the single scalar alpha."""

from __future__ import annotations

import numpy as np
import torch

from tests.norms.reference import build, randn, run


def test_dyt_formula_init_and_scalar_alpha():
    d = 10
    m = build("dyt", d)
    x = np.ones((1, d))
    np.testing.assert_allclose(run(m, x, torch.float64), np.full((1, d), 0.462117), atol=1e-6)  # tanh(0.5)
    np.testing.assert_allclose(run(m, np.full((1, d), 100.0), torch.float64), 1.0, atol=1e-12)  # no centering
    assert m.alpha.shape == (1,) and sum(p.numel() for p in m.parameters()) == 1 + 2 * d
    assert sum(p.numel() for p in build("dyt", d, bias=False).parameters()) == 1 + d
    w, b = randn(d, seed=12), randn(d, seed=13)
    m = build("dyt", d, alpha_init=0.8, dtype=torch.float64)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w)), m.bias.copy_(torch.from_numpy(b))
    x = randn(2, 3, d, seed=14, scale=3)
    np.testing.assert_allclose(run(m, x, torch.float64), w * np.tanh(0.8 * x) + b, rtol=1e-12)
