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


@pytest.mark.parametrize("base", ["layernorm", "rmsnorm"])
def test_layernorm_scaling_passes_eps_affine_and_bias_to_its_base(base):
    ref = np_layernorm if base == "layernorm" else lambda x, eps, w=None, b=None: np_rmsnorm(x, eps, w=w, b=b)
    x = randn(3, 6, seed=41, scale=0.3)  # mean square ~0.09: eps=0.5 dominates
    m = build("layernorm_scaling", 6, layer_idx=3, base=base, eps=0.5, bias=True, dtype=torch.float64)
    w, b = randn(6, seed=42), randn(6, seed=43)
    with torch.no_grad():
        m.norm.weight.copy_(torch.from_numpy(w)), m.norm.bias.copy_(torch.from_numpy(b))
    np.testing.assert_allclose(run(m, x, torch.float64), ref(x, 0.5, w, b) * 0.5, rtol=1e-10)
    assert len(list(build("layernorm_scaling", 6, layer_idx=0, base=base).parameters())) >= 1  # affine by default
    bare = build("layernorm_scaling", 6, layer_idx=3, base=base, elementwise_affine=False, dtype=torch.float64)
    assert len(list(bare.parameters())) == 0
    np.testing.assert_allclose(
        run(bare, x, torch.float64), ref(x, 1e-5 if base == "layernorm" else np.finfo(np.float64).eps) * 0.5, rtol=1e-10
    )
    bf = build("layernorm_scaling", 6, layer_idx=3, base=base)
    with torch.no_grad():
        y = bf(torch.from_numpy(x).bfloat16())
    assert y.dtype == torch.bfloat16
    np.testing.assert_allclose(y.double().numpy(), run(bf, x), rtol=2e-2, atol=1e-2)


def test_layernorm_scaling_errors_name_the_norm_and_the_fix():
    from normlight.norms.layernorm_scaling import LayerNormScaling

    whole = (
        r"^layernorm_scaling needs the 0-based block index: build it with "
        r"create_norm\('layernorm_scaling', C, layer_idx=i\) \(models pass layer_idx for block norms\)$"
    )
    with pytest.raises(ValueError, match=whole):
        LayerNormScaling(8)
    with pytest.raises(ValueError, match=r"layernorm_scaling layer_idx must be >= 0 \(0-based\), got -1"):
        LayerNormScaling(8, layer_idx=-1)
    m = LayerNormScaling(8, layer_idx=0, base="rmsnorm")
    with pytest.raises(ValueError, match=r"layernorm_scaling was built for 8 features .* shape \(2, 5\)"):
        m(torch.randn(2, 5))


@pytest.mark.parametrize("base", ["layernorm", "rmsnorm"])
def test_layernorm_scaling_without_affine_builds_its_scale_on_the_input_device(base):
    # the fast path folds the scale into an all-`scale` weight: on the input's device (meta here), not the CPU
    m = normlight.create_norm("layernorm_scaling", 8, layer_idx=3, base=base, elementwise_affine=False, device="meta")
    assert m(torch.empty(2, 5, 8, device="meta")).device.type == "meta"


def test_layernorm_scaling_fast_switch_is_its_own():
    # set_fast_norms(model, False) runs the reference code: the base norm's own (reference) path, no fast Function
    from normlight.norms.fast import set_fast_norms
    from tests.norms.test_every_norm import custom_nodes

    m = normlight.create_norm("layernorm_scaling", 8, layer_idx=1, base="rmsnorm")
    x = torch.randn(2, 3, 8, requires_grad=True)
    assert custom_nodes(m(x)) == ["RMSNormFunction"]
    set_fast_norms(m, False)
    assert custom_nodes(m(x)) == []


@pytest.mark.parametrize("fast_path", [True, False])
def test_layernorm_scaling_rmsnorm_base_normalizes_a_bf16_input_in_float32(fast_path):
    # half inputs: statistics in float32, one rounding at the end (within half a bf16 ulp of float64)
    from normlight.norms.fast import set_fast_norms

    m = normlight.create_norm("layernorm_scaling", 64, layer_idx=3, base="rmsnorm")
    set_fast_norms(m, fast_path)
    with torch.no_grad():
        m.norm.weight.copy_(torch.rand(64, generator=torch.Generator().manual_seed(6)) + 0.5)
    x = (torch.randn(8, 64, generator=torch.Generator().manual_seed(7)) * 3 + 0.5).bfloat16()
    y = m(x).double()
    xd, w = x.double(), m.norm.weight.detach().double()
    want = xd / torch.sqrt((xd**2).mean(-1, keepdim=True) + torch.finfo(torch.float32).eps) * w * 0.5
    assert ((y - want).abs() <= 2**-8 * want.abs() + 1e-6).all()
