"""LayerNorm Scaling (Sun et al. 2025, Curse of Depth): 1/sqrt(layer_idx + 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import normlight
from tests.norms.reference import build, np_layernorm, np_rmsnorm, randn, run


@pytest.mark.parametrize("layer_idx, factor", [(0, 1.0), (1, 0.7071068), (2, 0.5773503), (3, 0.5)])
def test_layernorm_scaling_is_one_over_sqrt_of_one_based_layer(layer_idx, factor):
    x = randn(3, 16, seed=40, scale=2)
    y = run(build("layernorm_scaling", 16, layer_idx=layer_idx), x, torch.float64)
    np.testing.assert_allclose(y, np_layernorm(x, 1e-5) * factor, rtol=1e-6)
    y_rms = run(build("layernorm_scaling", 16, layer_idx=layer_idx, base="rmsnorm", eps=1e-6), x, torch.float64)
    np.testing.assert_allclose(y_rms, np_rmsnorm(x, 1e-6) * factor, rtol=1e-6)


def test_layernorm_scaling_off_by_one_and_missing_layer_idx():
    x = randn(2, 8, seed=41)
    y = run(build("layernorm_scaling", 8, layer_idx=3), x, torch.float64)
    assert not np.allclose(y, np_layernorm(x) / math.sqrt(3))  # 0-based l would give 1/sqrt(3)
    with pytest.raises(normlight.PluginOptionError, match="layer_idx"):
        build("layernorm_scaling", 8)
    with pytest.raises(normlight.PluginOptionError, match="base must be one of"):
        build("layernorm_scaling", 8, layer_idx=0, base="batchnorm")


def test_layernorm_scaling_leaves_model_level_norms_unscaled():
    x = randn(2, 8, seed=42)
    for site in ("final", "patch_pre", "patch_post"):
        np.testing.assert_allclose(
            run(build("layernorm_scaling", 8, layer_idx=5, site=site), x, torch.float64), np_layernorm(x), rtol=1e-6
        )
    np.testing.assert_allclose(run(build("layernorm_scaling", 8, site="final"), x, torch.float64), np_layernorm(x))
    y = run(build("layernorm_scaling", 8, layer_idx=3, site="mlp_in"), x, torch.float64)
    np.testing.assert_allclose(y, np_layernorm(x) * 0.5, rtol=1e-6)
