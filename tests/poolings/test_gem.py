"""GeM and Group GeM against numpy; learned p per group reaches the diagnostics."""

import numpy as np
import pytest
import torch

import normlight


def gem_np(x, p, eps=1e-6):
    return (np.maximum(x, eps) ** p).mean(axis=1) ** (1.0 / p)


def test_gem_matches_formula_and_limits():
    x = torch.tensor([[[1.0, -2.0], [3.0, 0.5]]], dtype=torch.float64)  # (B=1, N=2, D=2)
    gem = normlight.create_pooling("gem", 2).double()
    np.testing.assert_allclose(gem(x).detach().numpy(), gem_np(x.numpy(), 3.0), rtol=1e-12)
    assert gem.diagnostics() == {"p": 3.0}
    with torch.no_grad():
        gem.p.fill_(1.0)  # p = 1: the mean of the clamped tokens
    np.testing.assert_allclose(gem(x).detach().numpy(), np.maximum(x.numpy(), 1e-6).mean(1), rtol=1e-12)


def test_ggem_one_p_per_group_defaults_to_heads():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 8, generator=g, dtype=torch.float64).abs() + 0.1
    pool = normlight.create_pooling("ggem", 8, num_heads=4).double()
    assert pool.p.shape == (4,)
    with torch.no_grad():
        pool.p.copy_(torch.tensor([1.0, 2.0, 3.0, 5.0]))
    want = np.concatenate([gem_np(x.numpy()[..., 2 * i : 2 * i + 2], p) for i, p in enumerate([1, 2, 3, 5])], -1)
    np.testing.assert_allclose(pool(x).detach().numpy(), want, rtol=1e-10)
    assert pool.diagnostics() == {"p_g0": 1.0, "p_g1": 2.0, "p_g2": 3.0, "p_g3": 5.0}
    # a single group is GeM
    one = normlight.create_pooling("ggem", 8, groups=1).double()
    np.testing.assert_allclose(one(x).detach().numpy(), gem_np(x.numpy(), 3.0), rtol=1e-10)


def test_ggem_needs_groups_that_divide_dim():
    with pytest.raises(normlight.PluginOptionError, match="does not divide dim"):
        normlight.create_pooling("ggem", 8, groups=3)
    with pytest.raises(normlight.PluginOptionError, match="needs `groups`"):
        normlight.create_pooling("ggem", 8)
