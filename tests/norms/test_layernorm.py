"""LayerNorm (Ba et al. 2016): numpy formula, the biased-variance distinguishing value, torch-like init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normlight.norms.layernorm import LayerNorm
from tests.norms.reference import build, np_layernorm, randn, run


def test_layernorm_matches_numpy_with_affine():
    m = build("layernorm", 24, dtype=torch.float64)
    w, b = randn(24, seed=1), randn(24, seed=2)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w)), m.bias.copy_(torch.from_numpy(b))
    x = randn(3, 5, 24, scale=3, shift=2)
    np.testing.assert_allclose(run(m, x, torch.float64), np_layernorm(x, 1e-5, w, b), rtol=1e-10, atol=1e-10)


def test_layernorm_biased_variance_distinguishing_value():
    y = run(build("layernorm", 4), np.array([[1.0, 2.0, 3.0, 4.0]]), torch.float64)
    assert y[0, 0] == pytest.approx(-1.341635, abs=1e-6)  # unbiased variance would give -1.161892
    assert abs(y[0, 0] - (-1.161892)) > 0.1


def test_layernorm_defaults_and_init_like_torch():
    m = build("layernorm", 8)
    assert m.eps == 1e-5 and torch.equal(m.weight, torch.ones(8)) and torch.equal(m.bias, torch.zeros(8))
    assert build("layernorm", 8, bias=False).bias is None
    bare = build("layernorm", 8, elementwise_affine=False)
    assert bare.weight is None and bare.bias is None and len(list(bare.parameters())) == 0
    x = torch.randn(4, 8)
    torch.testing.assert_close(m(x), torch.nn.LayerNorm(8)(x))


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])  # torch's kernel; the float32 upcast path
def test_layernorm_passes_its_eps_to_both_paths(in_dtype):
    x = randn(3, 6, seed=3, scale=0.3)  # variance ~0.09: eps=0.5 changes the result by far more than bf16 rounding
    x = torch.from_numpy(x).to(in_dtype).double().numpy()  # the values the module actually sees
    y = run(build("layernorm", 6, eps=0.5), x, in_dtype)
    np.testing.assert_allclose(y, np_layernorm(x, 0.5), rtol=2e-2, atol=1e-2)


def test_layernorm_print_shows_its_options():
    assert "elementwise_affine=True, bias=True" in repr(build("layernorm", 8))
    assert "bias=False" in repr(build("layernorm", 8, bias=False))
    assert "elementwise_affine=False, bias=False" in repr(build("layernorm", 8, elementwise_affine=False))


def test_layernorm_takes_a_float32_input_through_a_bf16_module_without_bias():
    # torch's kernel refuses a float32 input with bf16 parameters: the upcast path must take it, also when the
    # only parameter is the weight (bias=False)
    m = LayerNorm(8, bias=False, dtype=torch.bfloat16)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(5))
    y = m(x)
    assert y.dtype == torch.float32
    xd = x.double().numpy()
    want = (xd - xd.mean(-1, keepdims=True)) / np.sqrt(xd.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-5, atol=1e-6)
