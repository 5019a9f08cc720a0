"""GroupNorm (Wu & He 2018) and InstanceNorm (Ulyanov et al. 2016) against numpy and torch's NCHW modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normlight
from normlight.layers.layout import ChannelsFirst
from normlight.norms import fast
from tests.norms.reference import build, np_groupnorm, randn, run


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
    m.load_state_dict(
        {k.replace("norm.", ""): v for k, v in ref.state_dict().items()}
        if fast_path
        else {"norm." + k: v for k, v in ref.state_dict().items()}
    )
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
    with pytest.raises(
        normlight.PluginOptionError,
        match=r"num_groups=32 does not divide num_features=48.*\[1, 2, 3, 4, 6, 8, 12, 16, 24, 48\]",
    ):
        build("groupnorm", 48)


@pytest.mark.parametrize("fast_path", [False, True])
def test_instancenorm_equals_numpy_and_torch_instancenorm2d(fast_path):
    c = 6
    x = torch.randn(3, c, 5, 4, dtype=torch.float64)
    m = (
        build("instancenorm", c, layout="channels_first") if fast_path else ChannelsFirst(build("instancenorm", c))
    ).double()
    expect = np_groupnorm(x.numpy(), c, 1e-5)  # one group per channel
    np.testing.assert_allclose(m(x).numpy(), expect, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m(x), torch.nn.InstanceNorm2d(c)(x))
    assert len(list(m.parameters())) == 0


def test_instancenorm_rejects_running_stats_and_missing_positions():
    with pytest.raises(normlight.PluginOptionError, match="no running statistics"):
        build("instancenorm", 4, track_running_stats=True)
    with pytest.raises(ValueError, match="needs position dims"):
        build("instancenorm", 4)(torch.randn(2, 4))


def _reference(m):
    from normlight.norms.fast import set_fast_norms

    set_fast_norms(m, False)
    return m


@pytest.mark.parametrize("name", ["groupnorm", "instancenorm"])
@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])  # torch's kernel; the float32 upcast path
def test_group_norms_pass_a_non_default_eps_and_their_affine_parameters(name, in_dtype):
    c, groups = 4, (2 if name == "groupnorm" else 4)
    opts = {"num_groups": 2} if name == "groupnorm" else {"affine": True}
    m = _reference(build(name, c, eps=0.5, **opts))
    w, b = randn(c, seed=70) + 2.0, randn(c, seed=71)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w)), m.bias.copy_(torch.from_numpy(b))
    x = torch.from_numpy(randn(2, 3, c, seed=72, scale=0.3)).to(in_dtype)  # variance ~0.09: eps=0.5 dominates
    xn = x.double().numpy()
    want = np.moveaxis(np_groupnorm(np.moveaxis(xn, -1, 1), groups, 0.5, w, b), 1, -1)
    np.testing.assert_allclose(run(m, xn, in_dtype), want, rtol=2e-2, atol=2e-2)


def test_group_norms_build_and_print_their_affine_option():
    assert len(list(build("groupnorm", 8, num_groups=2, affine=False).parameters())) == 0
    assert "affine=False" in repr(build("groupnorm", 8, num_groups=2, affine=False))
    assert "num_groups=2, eps=1e-05, affine=True" in repr(build("groupnorm", 8, num_groups=2))
    inst = build("instancenorm", 8, affine=True, device="meta")
    assert [p.device.type for p in inst.parameters()] == ["meta", "meta"]


def test_groupnorm_reference_code_takes_a_float32_input_through_a_bf16_module():
    m = _reference(build("groupnorm", 8, num_groups=2, dtype=torch.bfloat16))
    x = torch.randn(2, 3, 8)
    y = m(x)
    assert y.dtype == torch.float32
    want = np.moveaxis(np_groupnorm(np.moveaxis(x.double().numpy(), -1, 1), 2), 1, -1)
    np.testing.assert_allclose(y.detach().double().numpy(), want, rtol=1e-5, atol=1e-5)


def test_instancenorm_running_stats_error_says_what_it_does_instead():
    from normlight.norms.groupnorm import InstanceNorm

    whole = (
        r"^instancenorm keeps no running statistics \(track_running_stats=True is not supported\); "
        r"it normalizes every sample by its own statistics in train and eval alike$"
    )
    with pytest.raises(ValueError, match=whole):
        InstanceNorm(4, track_running_stats=True)


@pytest.mark.parametrize("module_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fast_path", [True, False])
def test_groupnorm_bf16_input_gets_parameter_gradients_computed_in_float32(fast_path, module_dtype):
    # the statistics and the backward run in float32 for a half input: float32 parameters get float32-accurate
    # gradients, bf16 ones the float32 gradient rounded once (torch's bf16 kernels are off by ~5e-3 and ~1.4e-2)
    g = torch.Generator().manual_seed(41)
    x = (torch.randn(2, 256, 8, generator=g) * 3 + 10).to(torch.bfloat16)
    dy = torch.randn(2, 256, 8, generator=g).to(torch.bfloat16)
    m = normlight.create_norm("groupnorm", 8, num_groups=2, dtype=module_dtype)
    fast.set_fast_norms(m, fast_path)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 2.0, 8)), m.bias.copy_(torch.linspace(-1.0, 1.0, 8))
    xg = x.clone().requires_grad_()
    m(xg).backward(dy)
    xn, dyn = x.double().numpy(), dy.double().numpy()  # the bf16 values, exactly
    xhat = np_groupnorm(xn.transpose(0, 2, 1), 2).transpose(0, 2, 1)  # numpy, float64
    tol = 1e-5 if module_dtype == torch.float32 else 2**-8  # bf16: one rounding of the result
    for got, want in ((m.weight.grad, (dyn * xhat).sum((0, 1))), (m.bias.grad, dyn.sum((0, 1)))):
        np.testing.assert_allclose(got.double().numpy(), want, rtol=tol, atol=tol * np.abs(want).max())
