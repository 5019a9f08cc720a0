"""Token / channel norms against independent float64 numpy formulas and norms.md's distinguishing tests.

Every reference here is written from the paper's formula (reference/norms.md), not from the module.
"""

import math

import numpy as np
import pytest
import torch

import normlight
from normlight.layout import ChannelsFirst


def build(name, c, **kw):
    return normlight.create_norm(name, c, **kw)


def run(module, x_np, dtype=torch.float32):
    """Forward a float64 numpy array through ``module`` in ``dtype``; result as float64 numpy."""
    with torch.no_grad():
        return module(torch.from_numpy(x_np).to(dtype)).double().numpy()


def randn(*shape, seed=0, scale=1.0, shift=0.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + shift


# ---------------------------------------------------------------- numpy references (float64)

def np_layernorm(x, eps=1e-5, w=None, b=None):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def np_rmsnorm(x, eps, k=None, outside=False, w=None, b=None):
    k = x.shape[-1] if k is None else k
    ms = (x[..., :k] ** 2).mean(-1, keepdims=True)
    y = x / (np.sqrt(ms) + eps) if outside else x / np.sqrt(ms + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


# ---------------------------------------------------------------- layernorm

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


# ---------------------------------------------------------------- rmsnorm

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
    np.testing.assert_allclose(run(m, x, torch.float64), np_rmsnorm(x, float(np.finfo(np.float64).eps), w=w), rtol=1e-12)
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
    big[:, d // 2:], zero[:, d // 2:] = 1e3, 0.0
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


# ---------------------------------------------------------------- crmsnorm

def test_crmsnorm_equals_layernorm_on_zero_mean_vectors():
    d = 12
    full = randn(5, d, seed=9)
    full -= full.mean(-1, keepdims=True)  # zero-mean residual stream
    y = run(build("crmsnorm", d - 1), full[:, :-1], torch.float64)
    np.testing.assert_allclose(y, np_layernorm(full, 1e-5)[:, :-1], rtol=1e-9, atol=1e-12)
    # the close-but-wrong variant that divides by d-1 (the compressed width) is measurably different
    z = full[:, :-1]
    wrong = z / np.sqrt(((z ** 2).sum(-1, keepdims=True) + z.sum(-1, keepdims=True) ** 2) / (d - 1) + 1e-5)
    assert np.abs(y - wrong).max() > 1e-2


def test_crmsnorm_no_affine_by_default():
    assert len(list(build("crmsnorm", 7).parameters())) == 0
    assert build("crmsnorm", 7, elementwise_affine=True).weight.shape == (7,)


# ---------------------------------------------------------------- scalenorm / l2norm

def test_scalenorm_init_equals_eps_free_rmsnorm_and_g_is_one_scalar():
    d = 20
    m = build("scalenorm", d, dtype=torch.float64)
    assert [p.numel() for p in m.parameters()] == [1] and m.g.item() == pytest.approx(math.sqrt(d))
    x = randn(4, d, seed=10)
    np.testing.assert_allclose(run(m, x, torch.float64), x / np.sqrt((x ** 2).mean(-1, keepdims=True)), rtol=1e-10)


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


# ---------------------------------------------------------------- dyt / identity

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


def test_identity_returns_input_and_ignores_num_features():
    x = torch.randn(2, 3, 5)
    assert build("identity", 999)(x) is x
    assert len(list(build("identity", 5).parameters())) == 0


# ---------------------------------------------------------------- half precision: statistics in float32

@pytest.mark.parametrize("name", ["layernorm", "rmsnorm", "scalenorm", "l2norm", "crmsnorm", "dyt"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("half_params", [False, True], ids=["fp32-params", "half-params"])
def test_half_inputs_use_float32_statistics(name, dtype, half_params):
    # large offset: a mean/variance accumulated in 16 bits loses most digits of the result.
    # fp32 parameters take the explicit upcast; half parameters take torch's fused kernels where they exist.
    x = torch.from_numpy(randn(4, 768, seed=15, shift=200.0)).to(dtype)
    m = build(name, 768)
    ref = m.double()(x.double())  # same half-rounded input, exact statistics
    y = (m.to(dtype) if half_params else m.float())(x)
    assert y.dtype == dtype
    tol = 2 ** -7 if dtype == torch.bfloat16 else 2 ** -10
    assert (y.double() - ref).abs().max().item() <= 2 * tol * ref.abs().max().item()


# ---------------------------------------------------------------- groupnorm / instancenorm

def np_groupnorm(x_nchw, groups, eps=1e-5, w=None, b=None):
    n, c = x_nchw.shape[:2]
    g = x_nchw.reshape(n, groups, -1)
    mu, var = g.mean(-1, keepdims=True), g.var(-1, keepdims=True)  # biased
    y = ((g - mu) / np.sqrt(var + eps)).reshape(x_nchw.shape)
    shape = (1, c) + (1,) * (x_nchw.ndim - 2)
    return y * (1 if w is None else w.reshape(shape)) + (0 if b is None else b.reshape(shape))


def test_groupnorm_channels_last_matches_numpy():
    c, groups = 12, 4
    m = build("groupnorm", c, num_groups=groups, dtype=torch.float64)
    w, b = randn(c, seed=20), randn(c, seed=21)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w)), m.bias.copy_(torch.from_numpy(b))
    x_nhwc = randn(3, 4, 5, c, seed=22, scale=2, shift=1)
    expect = np_groupnorm(np.moveaxis(x_nhwc, -1, 1), groups, 1e-5, w, b)
    np.testing.assert_allclose(run(m, x_nhwc, torch.float64), np.moveaxis(expect, 1, -1), rtol=1e-10, atol=1e-12)
    tokens = randn(2, 7, c, seed=23)  # (N, T, C): statistics over tokens x group channels
    expect = np_groupnorm(np.moveaxis(tokens, -1, 1), groups, 1e-5, w, b)
    np.testing.assert_allclose(run(m, tokens, torch.float64), np.moveaxis(expect, 1, -1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fast_path", [False, True])
def test_groupnorm_equals_torch_groupnorm_on_nchw(fast_path):
    c, groups = 32, 8
    ref = torch.nn.GroupNorm(groups, c)
    with torch.no_grad():
        ref.weight.normal_(), ref.bias.normal_()
    if fast_path:
        m = build("groupnorm", c, num_groups=groups, layout="channels_first")
        assert not isinstance(m, ChannelsFirst)
    else:
        m = ChannelsFirst(build("groupnorm", c, num_groups=groups))
    m.load_state_dict({k.replace("norm.", ""): v for k, v in ref.state_dict().items()} if fast_path
                      else {"norm." + k: v for k, v in ref.state_dict().items()})
    x = torch.randn(4, c, 6, 5)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["groupnorm", "instancenorm"])
def test_group_statistics_stay_accurate_with_a_large_mean(name):
    # torch's CPU kernel for channels_last-strided maps loses ~1% here; both layouts must stay exact
    x = torch.from_numpy(randn(2, 4, 5, 64, seed=24, shift=200.0)).float()  # NHWC
    kw = {"num_groups": 8} if name == "groupnorm" else {}
    groups = 8 if name == "groupnorm" else 64
    expect = np.moveaxis(np_groupnorm(np.moveaxis(x.double().numpy(), -1, 1), groups), 1, -1)
    np.testing.assert_allclose(build(name, 64, **kw)(x).detach().double().numpy(), expect, atol=2e-4)
    nchw_cl = x.movedim(-1, 1)  # an NCHW tensor in channels_last memory format
    y = build(name, 64, layout="channels_first", **kw)(nchw_cl)
    np.testing.assert_allclose(y.detach().double().numpy(), np.moveaxis(expect, -1, 1), atol=2e-4)


def test_groupnorm_error_lists_valid_group_counts():
    with pytest.raises(normlight.PluginOptionError, match=r"num_groups=32 does not divide num_features=48.*\[1, 2, 3, 4, 6, 8, 12, 16, 24, 48\]"):
        build("groupnorm", 48)


@pytest.mark.parametrize("fast_path", [False, True])
def test_instancenorm_equals_numpy_and_torch_instancenorm2d(fast_path):
    c = 6
    x = torch.randn(3, c, 5, 4, dtype=torch.float64)
    m = (build("instancenorm", c, layout="channels_first") if fast_path
         else ChannelsFirst(build("instancenorm", c))).double()
    expect = np_groupnorm(x.numpy(), c, 1e-5)  # one group per channel
    np.testing.assert_allclose(m(x).numpy(), expect, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m(x), torch.nn.InstanceNorm2d(c)(x))
    assert len(list(m.parameters())) == 0


def test_instancenorm_rejects_running_stats_and_missing_positions():
    with pytest.raises(normlight.PluginOptionError, match="no running statistics"):
        build("instancenorm", 4, track_running_stats=True)
    with pytest.raises(ValueError, match="needs position dims"):
        build("instancenorm", 4)(torch.randn(2, 4))


# ---------------------------------------------------------------- grn

def np_grn(x_nhwc, gamma, beta, eps=1e-6):
    g = np.sqrt((x_nhwc ** 2).sum(axis=(1, 2), keepdims=True))
    n = g / (g.mean(axis=-1, keepdims=True) + eps)
    return gamma * (x_nhwc * n) + beta + x_nhwc


@pytest.mark.parametrize("fast_path", [False, True])
def test_grn_matches_numpy_and_starts_as_identity(fast_path):
    c = 8
    x = randn(2, 5, 4, c, seed=30)  # NHWC
    fresh = build("grn", c)
    assert torch.equal(fresh.gamma, torch.zeros(c)) and torch.equal(fresh.beta, torch.zeros(c))
    np.testing.assert_allclose(run(fresh, x), x, rtol=1e-6)
    gamma, beta = randn(c, seed=31), randn(c, seed=32)
    m = build("grn", c, dtype=torch.float64, **({"layout": "channels_first"} if fast_path else {}))
    with torch.no_grad():
        m.gamma.copy_(torch.from_numpy(gamma)), m.beta.copy_(torch.from_numpy(beta))
    expect = np_grn(x, gamma, beta)
    if fast_path:
        y = run(m, np.ascontiguousarray(np.moveaxis(x, -1, 1)), torch.float64)
        np.testing.assert_allclose(np.moveaxis(y, 1, -1), expect, rtol=1e-10)
    else:
        np.testing.assert_allclose(run(m, x, torch.float64), expect, rtol=1e-10)


def test_grn_divides_by_the_channel_mean():
    # scaling one channel changes the others' output through mean_c G_c (a per-channel-only norm would not)
    m = build("grn", 4, dtype=torch.float64)
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = randn(1, 3, 3, 4, seed=33)
    x2 = x.copy()
    x2[..., 0] *= 10
    y1, y2 = run(m, x, torch.float64), run(m, x2, torch.float64)
    assert np.abs(y1[..., 1:] - y2[..., 1:]).max() > 0.1


def test_grn_needs_positions():
    with pytest.raises(ValueError, match="grn needs position dims"):
        build("grn", 4)(torch.randn(2, 4))


# ---------------------------------------------------------------- layernorm_scaling

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


# ---------------------------------------------------------------- half precision for the position norms

@pytest.mark.parametrize("name", ["groupnorm", "instancenorm", "grn"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_position_norms_half_inputs_use_float32_statistics(name, dtype):
    x = torch.from_numpy(randn(2, 16, 64, seed=42, shift=200.0)).to(dtype)
    m = build(name, 64, **({"num_groups": 8} if name == "groupnorm" else {"affine": True} if name == "instancenorm" else {}))
    if name == "grn":
        with torch.no_grad():
            m.gamma.fill_(1.0)
    ref = m.double()(x.double())
    y = m.float()(x)
    assert y.dtype == dtype
    tol = 2 ** -7 if dtype == torch.bfloat16 else 2 ** -10
    assert (y.double() - ref).abs().max().item() <= 2 * tol * ref.abs().max().item()
    y = m.to(dtype)(x)  # half parameters too
    assert y.dtype == dtype
    tol = 2 ** -7 if dtype == torch.bfloat16 else 2 ** -10
    assert (y.double() - ref).abs().max().item() <= 2 * tol * ref.abs().max().item()
