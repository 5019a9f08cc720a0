"""RMSNorm (Zhang & Sennrich 2019), partial RMSNorm and CRMSNorm (Jiang et al. 2023) against numpy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import normlight
from normlight.norms import fast
from tests.norms.reference import build, np_layernorm, np_rmsnorm, randn, run


def test_rmsnorm_default_eps_inside_matches_numpy():
    m = build("rmsnorm", 32, dtype=torch.float64)
    w = randn(32, seed=3)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
    x = randn(4, 32, scale=2)
    eps32 = float(np.finfo(np.float32).eps)
    m32 = build("rmsnorm", 32)
    with torch.no_grad():
        m32.weight.copy_(torch.from_numpy(w))
    np.testing.assert_allclose(run(m32, x), np_rmsnorm(x, eps32, w=w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        run(m, x, torch.float64), np_rmsnorm(x, float(np.finfo(np.float64).eps), w=w), rtol=1e-12
    )
    assert m.bias is None and torch.equal(build("rmsnorm", 32).weight, torch.ones(32))


def test_rmsnorm_eps_inside_vs_outside_distinguishes():
    x = 1e-3 * randn(1, 8, seed=4)  # rms ~ 1e-3
    inside = run(build("rmsnorm", 8, eps=1e-8), x, torch.float64)
    outside = run(build("rmsnorm", 8, eps=1e-8, eps_outside=True), x, torch.float64)
    np.testing.assert_allclose(inside, np_rmsnorm(x, 1e-8), rtol=1e-10)
    np.testing.assert_allclose(outside, np_rmsnorm(x, 1e-8, outside=True), rtol=1e-10)
    assert np.abs(inside / outside - 1).max() > 5e-3  # eps inside vs outside differ at the ~1% level here
    torch_default = run(build("rmsnorm", 8), x)  # float32 machine eps (1.19e-7), inside
    assert np.abs(torch_default / inside - 1).max() > 0.03


def test_rmsnorm_eps_outside_default_is_reference_1e_8():
    m = build("rmsnorm", 8, eps_outside=True)
    x = 1e-4 * randn(2, 8, seed=5)
    np.testing.assert_allclose(run(m, x, torch.float64), np_rmsnorm(x, 1e-8, outside=True), rtol=1e-10)


def test_partial_rmsnorm_uses_first_k_features_only():
    d, p = 16, 0.5
    m = build("rmsnorm", d, p=p, eps=1e-8)
    x = randn(3, d, seed=6)
    np.testing.assert_allclose(run(m, x, torch.float64), np_rmsnorm(x, 1e-8, k=int(d * p)), rtol=1e-10)
    big, zero = x.copy(), x.copy()
    big[:, d // 2 :], zero[:, d // 2 :] = 1e3, 0.0
    yb, yz = run(m, big, torch.float64), run(m, zero, torch.float64)
    np.testing.assert_allclose(yb[:, : d // 2], yz[:, : d // 2], rtol=1e-12)  # first half unaffected by the rest
    full = run(build("rmsnorm", d, eps=1e-8), big, torch.float64)
    assert not np.allclose(full[:, : d // 2], yb[:, : d // 2])


@pytest.mark.parametrize("p", [0.0, 1.5, 0.01])
def test_partial_rmsnorm_rejects_bad_p(p):
    with pytest.raises(normlight.PluginOptionError, match="rmsnorm p"):
        build("rmsnorm", 16, p=p)


def test_rmsnorm_half_inputs_default_eps_follows_torch_and_explicit_bf16_eps_damps():
    # torch >= 2.x: eps=None is the eps of the computation dtype (float32 for bf16), so ms=1e-3 is NOT damped.
    x = torch.full((1, 64), math.sqrt(1e-3)).bfloat16()
    y = build("rmsnorm", 64)(x)
    assert y.dtype == torch.bfloat16 and y[0, 0].item() == pytest.approx(1.0, abs=1e-2)
    torch.testing.assert_close(y, torch.nn.RMSNorm(64)(x.float()).bfloat16())
    # norms.md 1c's old default, eps = finfo(bfloat16).eps, damps by sqrt(1e-3 / (1e-3 + 0.0078125)) = 0.337
    damped = build("rmsnorm", 64, eps=torch.finfo(torch.bfloat16).eps)(x)
    assert damped[0, 0].item() == pytest.approx(math.sqrt(1e-3 / (1e-3 + 0.0078125)), rel=1e-2)


def test_rmsnorm_bias_option():
    m = build("rmsnorm", 6, bias=True, eps=1e-6, dtype=torch.float64)
    b = randn(6, seed=7)
    with torch.no_grad():
        m.bias.copy_(torch.from_numpy(b))
    x = randn(2, 6, seed=8)
    np.testing.assert_allclose(run(m, x, torch.float64), np_rmsnorm(x, 1e-6, b=b), rtol=1e-10)


def test_crmsnorm_equals_layernorm_on_zero_mean_vectors():
    d = 12
    full = randn(5, d, seed=9)
    full -= full.mean(-1, keepdims=True)  # zero-mean residual stream
    y = run(build("crmsnorm", d - 1), full[:, :-1], torch.float64)
    np.testing.assert_allclose(y, np_layernorm(full, 1e-5)[:, :-1], rtol=1e-9, atol=1e-12)
    # the close-but-wrong variant that divides by d-1 (the compressed width) is measurably different
    z = full[:, :-1]
    wrong = z / np.sqrt(((z**2).sum(-1, keepdims=True) + z.sum(-1, keepdims=True) ** 2) / (d - 1) + 1e-5)
    assert np.abs(y - wrong).max() > 1e-2


def test_crmsnorm_no_affine_by_default():
    assert len(list(build("crmsnorm", 7).parameters())) == 0
    assert build("crmsnorm", 7, elementwise_affine=True).weight.shape == (7,)


def _reference(m):
    from normlight.norms.fast import set_fast_norms

    set_fast_norms(m, False)
    return m


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])  # torch's kernel; the float32 upcast path
def test_rmsnorm_reference_code_passes_a_non_default_eps(in_dtype):
    x = torch.from_numpy(randn(3, 6, seed=60, scale=0.3)).to(in_dtype)  # mean square ~0.09: eps=0.5 dominates
    y = run(_reference(build("rmsnorm", 6, eps=0.5)), x.double().numpy(), in_dtype)
    np.testing.assert_allclose(y, np_rmsnorm(x.double().numpy(), 0.5), rtol=2e-2, atol=1e-2)


@pytest.mark.parametrize("opts", [{"p": 0.5}, {"eps_outside": True, "eps": 1e-3}])
def test_rmsnorm_reference_code_of_the_options_with_weights_on_token_batches(opts):
    c, k = 8, 4 if "p" in opts else 8
    w = randn(c, seed=61) + 2.0
    m = _reference(build("rmsnorm", c, dtype=torch.float64, **opts))
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
    x = randn(2, 3, c, seed=62, scale=2.0)  # (N, T, C): the mean square is over the last dim only
    want = np_rmsnorm(
        x,
        opts.get("eps", 0.0) if "p" not in opts else np.finfo(np.float64).eps,
        k=k,
        outside="eps_outside" in opts,
        w=w,
    )
    np.testing.assert_allclose(run(m, x, torch.float64), want, rtol=1e-10)


def test_partial_rmsnorm_accepts_the_edges_of_p_and_says_which_p_works():
    x = randn(2, 8, seed=63)
    full = run(build("rmsnorm", 8, p=1.0, dtype=torch.float64), x, torch.float64)  # p=1: all features
    np.testing.assert_allclose(full, np_rmsnorm(x, np.finfo(np.float64).eps), rtol=1e-10)
    one = run(build("rmsnorm", 8, p=0.125, dtype=torch.float64), x, torch.float64)  # k = 1 feature
    np.testing.assert_allclose(one, np_rmsnorm(x, np.finfo(np.float64).eps, k=1), rtol=1e-10)
    from normlight.norms.rmsnorm import RMSNorm

    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        RMSNorm(8, p=0.0)
    with pytest.raises(ValueError, match=r"rmsnorm p=0.1 keeps int\(8 \* 0.1\) = 0 features; use p >= 0.125$"):
        RMSNorm(8, p=0.1)


def test_rmsnorm_and_crmsnorm_print_and_build_their_options():
    assert "elementwise_affine=False, bias=True, p=0.5," in repr(
        build("rmsnorm", 8, elementwise_affine=False, bias=True, p=0.5)
    )
    assert "elementwise_affine=True, bias=False, p=-1.0," in repr(build("rmsnorm", 8))
    assert len(list(build("rmsnorm", 8, elementwise_affine=False).parameters())) == 0
    assert "elementwise_affine=True" in repr(build("crmsnorm", 8, elementwise_affine=True))
    on_meta = build("crmsnorm", 8, elementwise_affine=True, device="meta")
    assert on_meta.weight.device.type == "meta"


def test_rmsnorm_options_path_names_the_norm_on_a_wrong_width():
    for opts in ({"p": 0.5}, {"eps_outside": True}, {"bias": True}):
        with pytest.raises(ValueError, match=r"^rmsnorm was built for 8 features .*\(2, 6\)"):
            _reference(build("rmsnorm", 8, **opts))(torch.randn(2, 6))


@pytest.mark.parametrize("x_dtype,module_dtype", [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)])
def test_rmsnorm_reference_code_upcasts_a_bf16_input_for_float32_weights_without_warnings(x_dtype, module_dtype):
    # torch's rms_norm kernel refuses mixed dtypes for its fused code and warns ("Mismatch dtype between input
    # and weight"); the reference code casts input and weight to the compute dtype (float32) first
    m = build("rmsnorm", 8, dtype=module_dtype)
    fast.set_fast_norms(m, False)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 2.0, 8))
    x = torch.from_numpy(randn(3, 4, 8, seed=40, scale=3.0)).to(x_dtype)
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # torch warns once per process otherwise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = m(x)
    finally:
        torch.set_warn_always(before)
    assert y.dtype == x_dtype
    want = np_rmsnorm(x.double().numpy(), torch.finfo(torch.float32).eps, w=np.linspace(0.5, 2.0, 8))
    np.testing.assert_allclose(y.detach().double().numpy(), want, rtol=1e-2)
