"""Each norm against an independent numpy formula, then normlight's conformance kit on the registered names.

Run with the package installed (pip install -e . or --target): the kit resolves the entry-point names,
which also checks that pyproject.toml registers them.
"""

import numpy as np
import pytest
import torch

import normlight
from normlight.testing import NormPluginConformance


def _np(t):
    return t.detach().double().numpy()


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3 + 1


# ---- BiasNorm -------------------------------------------------------------------------------------
def _biasnorm_ref(x, b, g, eps=1e-8, lo=-1.5, hi=1.5):
    return x / np.sqrt(np.mean((x - b) ** 2, axis=-1, keepdims=True) + eps) * np.exp(np.clip(g, lo, hi))


@pytest.mark.parametrize("log_scale", [0.3, 1.0, 2.7, -4.0])  # 2.7 and -4.0 fall outside [-1.5, 1.5]
def test_biasnorm_matches_numpy(log_scale):
    m = normlight.create_norm("biasnorm", 8, log_scale=log_scale)
    with torch.no_grad():
        m.bias.copy_(torch.linspace(-1, 2, 8))
    x = _x(2, 5, 8)
    np.testing.assert_allclose(_np(m(x)), _biasnorm_ref(_np(x), _np(m.bias), log_scale), rtol=1e-5, atol=1e-6)


def test_biasnorm_keeps_the_component_along_the_bias_that_layernorm_removes():
    # with b = 0 and x = c * ones, LayerNorm outputs 0; BiasNorm outputs exp(1) * sign(c) * ones
    m = normlight.create_norm("biasnorm", 4)
    y = m(torch.full((1, 4), -2.0))
    np.testing.assert_allclose(_np(y), -np.e * np.ones((1, 4)), rtol=1e-6)


def test_biasnorm_defaults_and_bf16():
    m = normlight.create_norm("biasnorm", 6)
    assert torch.equal(m.bias, torch.zeros(6)) and m.log_scale.item() == 1.0
    x = _x(3, 6)
    y16 = m.to(torch.bfloat16)(x.bfloat16())
    assert y16.dtype == torch.bfloat16
    np.testing.assert_allclose(_np(y16), _biasnorm_ref(_np(x), 0.0, 1.0), rtol=2e-2, atol=2e-2)


# ---- L1 normalization ----------------------------------------------------------------------------
def _l1_ref(x, w, b, eps=1e-5):
    xc = x - x.mean(-1, keepdims=True)
    return w * xc / (np.abs(xc).mean(-1, keepdims=True) + eps) + b


def test_l1norm_matches_numpy():
    m = normlight.create_norm("l1norm", 8, eps=1e-3)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 2, 8))
        m.bias.copy_(torch.linspace(-1, 1, 8))
    x = _x(2, 3, 8)
    np.testing.assert_allclose(_np(m(x)), _l1_ref(_np(x), _np(m.weight), _np(m.bias), 1e-3), rtol=1e-5, atol=1e-6)


def test_l1norm_mean_absolute_deviation_is_one_not_the_std():
    y = normlight.create_norm("l1norm", 64, elementwise_affine=False)(_x(4, 64))
    np.testing.assert_allclose(_np(y.abs().mean(-1)), np.ones(4), rtol=1e-4)
    assert (y.std(-1, unbiased=False) > 1.05).all()  # std of a Gaussian is sqrt(pi/2) ~ 1.25 times its MAD


# ---- L1 batch norm -------------------------------------------------------------------------------
def _l1bn_stats(rows):
    mu = rows.mean(0)
    return mu, np.abs(rows - mu).mean(0)


def test_l1batchnorm_train_eval_and_running_stats_match_numpy():
    m = normlight.create_norm("l1batchnorm", 5, momentum=0.2, affine=False)
    xs = [_x(3, 4, 5, seed=s) for s in range(3)]
    rm, rd = np.zeros(5), np.ones(5)
    for x in xs:
        rows = _np(x).reshape(-1, 5)
        mu, mad = _l1bn_stats(rows)
        np.testing.assert_allclose(_np(m(x)), (_np(x) - mu) / (mad + 1e-5), rtol=1e-5, atol=1e-6)
        rm, rd = 0.8 * rm + 0.2 * mu, 0.8 * rd + 0.2 * mad
        np.testing.assert_allclose(_np(m.batch_stat), mad, rtol=1e-5)
    np.testing.assert_allclose(_np(m.running_mean), rm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(m.running_stat), rd, rtol=1e-5)
    x = _x(2, 5, seed=9)
    np.testing.assert_allclose(_np(m.eval()(x)), (_np(x) - rm) / (rd + 1e-5), rtol=1e-5, atol=1e-5)


def test_l1batchnorm_mask_excludes_padding_from_the_statistics():
    m = normlight.create_norm("l1batchnorm", 4, affine=False)
    x = _x(2, 6, 4)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    x[~mask] = 1e4
    mu, mad = _l1bn_stats(_np(x)[_np(mask).astype(bool)])
    y = _np(m(x, mask=mask))
    np.testing.assert_allclose(
        y[_np(mask).astype(bool)], ((_np(x) - mu) / (mad + 1e-5))[_np(mask).astype(bool)], rtol=1e-5, atol=1e-5
    )


def test_l1batchnorm_single_value_per_channel_is_a_clear_error():
    m = normlight.create_norm("l1batchnorm", 4)
    with pytest.raises(ValueError, match="l1batchnorm needs more than one value per channel"):
        m(torch.randn(1, 4))


# ---- the conformance kit on the registered names -------------------------------------------------
class TestBiasNormConformance(NormPluginConformance):
    norm = "biasnorm"


class TestL1NormConformance(NormPluginConformance):
    norm = "l1norm"


class TestL1BatchNormConformance(NormPluginConformance):
    norm = "l1batchnorm"
    distributed = True  # 2 gloo ranks on half batches == one process on the full batch
