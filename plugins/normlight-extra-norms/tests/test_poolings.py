"""LSE pooling against numpy, then normlight's pooling conformance kit (the package must be installed)."""

import numpy as np
import torch

import normlight
from normlight.testing import PoolingPluginConformance


def test_lse_matches_numpy_and_its_limits():
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xn = x.numpy()
    pool = normlight.create_pooling("lse", 8, r=2.0)
    np.testing.assert_allclose(pool(x).numpy(), np.log(np.exp(2.0 * xn).mean(axis=1)) / 2.0, rtol=1e-10)
    np.testing.assert_allclose(normlight.create_pooling("lse", 8, r=1e-4)(x).numpy(), xn.mean(1), atol=1e-3)
    np.testing.assert_allclose(normlight.create_pooling("lse", 8, r=1e3)(x).numpy(), xn.max(1), atol=5e-3)


class TestLSEPoolConformance(PoolingPluginConformance):
    pooling = "lse"
