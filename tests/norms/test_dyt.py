"""Dynamic Tanh (Zhu et al. 2025): formula, init and the single scalar alpha; alpha_init="auto"."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from normlight.norms.dyt import DyT
from tests.norms.reference import build, randn, run


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
