"""Batch-Channel Normalization (Khaled et al. 2023, norms.md 11) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normlight
from normlight.norms.bcn import BatchChannelNorm
from tests.norms.reference import np_bcn, rand
from tests.norms.test_batchnorm import graph_nodes


@pytest.mark.parametrize("layout", [None, "channels_first"])
def test_bcn_matches_numpy_and_per_group_affine(layout):
    C, G = 8, 4
    m = normlight.create_norm("bcn", C, num_groups=G, layout=layout)
    assert m.weight.shape == (G,) and torch.equal(m.weight, torch.ones(G)) and torch.equal(m.bias, torch.zeros(G))
    with torch.no_grad():
        m.weight.copy_(rand(G, seed=140) + 1)
        m.bias.copy_(rand(G, seed=141))
    x = rand(3, 2, 2, C, seed=142, scale=2.0, shift=1.0)  # channels-last (N, H, W, C)
    xin = x.permute(0, 3, 1, 2) if layout else x
    y = m(xin)
    y = y.permute(0, 2, 3, 1) if layout else y
    want = np_bcn(x.double().numpy(), G, m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-5, atol=1e-5)
    # BN stage: sample 0's output depends on the other samples
    x2 = x.clone()
    x2[1:] *= 3.0
    y2 = m(x2.permute(0, 3, 1, 2) if layout else x2)
    y2 = y2.permute(0, 2, 3, 1) if layout else y2
    assert not torch.allclose(y[0], y2[0], atol=1e-3)


def test_bcn_mask_group_count_error_and_bf16():
    C, G = 4, 2
    x = rand(2, 5, C, seed=150)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    garbage = x.clone()
    garbage[~mask] = -40.0
    y1 = BatchChannelNorm(C, num_groups=G)(x, mask=mask)
    y2 = BatchChannelNorm(C, num_groups=G)(garbage, mask=mask)
    torch.testing.assert_close(y1[mask], y2[mask])
    with pytest.raises(ValueError, match="bcn: num_groups=32 must be a positive divisor of num_features=4"):
        BatchChannelNorm(C)
    assert BatchChannelNorm(C, num_groups=G)(x.bfloat16()).dtype == torch.bfloat16
    m64 = BatchChannelNorm(C, num_groups=G, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: m64(t, mask=mask), (x.double().requires_grad_(),))


def bcn_channels_first_reference(x_nchw, mask, G, gw, gb, eps):
    """np_bcn on a channels-first map with a padding mask: both stages' statistics over real positions."""
    xl = np.moveaxis(x_nchw, 1, -1)
    N, C = xl.shape[0], xl.shape[-1]
    real = xl[mask]
    mean, var = real.mean(0), real.var(0)
    y = (xl - mean) / np.sqrt(var + eps)
    g = y.reshape(N, -1, G, C // G)
    wts = mask.reshape(N, -1, 1, 1).astype(float)
    cnt = wts.sum(1, keepdims=True) * (C // G)
    gm = (g * wts).sum((1, 3), keepdims=True) / cnt
    gv = ((g - gm) ** 2 * wts).sum((1, 3), keepdims=True) / cnt
    z = ((g - gm) / np.sqrt(gv + eps) * gw.reshape(1, 1, G, 1) + gb.reshape(1, 1, G, 1)).reshape(xl.shape)
    return np.moveaxis(z, -1, 1)


@pytest.mark.parametrize("fast_path", [True, False])
def test_bcn_channels_first_with_mask_eps_and_half_input(fast_path):
    # channels-first (N, C, H, W) with every size distinct, a mask (N, H, W), a non-default eps (both stages)
    N, C, H, W, G, eps = 2, 6, 3, 5, 2, 0.2
    m = BatchChannelNorm(C, num_groups=G, eps=eps, layout="channels_first")
    normlight.set_fast_norms(m, fast_path)
    with torch.no_grad():
        m.weight.copy_(rand(G, seed=151) + 1)
        m.bias.copy_(rand(G, seed=152))
    gw, gb = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
    x = rand(N, C, H, W, seed=153, scale=2.0, shift=1.0)
    mask = torch.ones(N, H, W, dtype=torch.bool)
    mask[0, 1] = False
    mask[1, :, 4] = False
    full = np.ones((N, H, W), dtype=bool)
    for mk, mn in ((mask, mask.numpy()), (None, full)):
        y = m(x, mask=mk)
        assert y.shape == x.shape
        want = bcn_channels_first_reference(x.double().numpy(), mn, G, gw, gb, eps)
        np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-5, atol=1e-5)
        assert m(x.bfloat16(), mask=mk).dtype == torch.bfloat16
    # channels-last (N, T, C) with a mask and bf16 input: the output keeps the input dtype
    xt = rand(3, 4, C, seed=154)
    tmask = torch.ones(3, 4, dtype=torch.bool)
    tmask[2, 2:] = False
    y16 = BatchChannelNorm(C, num_groups=G)(xt.bfloat16(), mask=tmask)
    assert y16.dtype == torch.bfloat16


def test_bcn_options_reach_the_batchnorm_stage():
    C = 4
    m = BatchChannelNorm(C, num_groups=1)  # one group is a valid divisor
    assert m.num_groups == 1 and m.bn.sync_stats is True and m.bn.momentum == 0.1 and m.bn.eps == 1e-5
    m = BatchChannelNorm(C, num_groups=2, eps=0.3, momentum=0.25, sync_stats=False)
    assert (m.bn.eps, m.bn.momentum, m.bn.sync_stats) == (0.3, 0.25, False)
    x = rand(3, 5, C, seed=155, scale=2.0, shift=1.0)
    m(x)
    r = x.reshape(-1, C).double().numpy()
    np.testing.assert_allclose(m.bn.running_mean.numpy(), 0.25 * r.mean(0), rtol=1e-5, atol=1e-6)
    meta = BatchChannelNorm(C, num_groups=2, device="meta", dtype=torch.float64)
    assert {t.device.type for t in [*meta.parameters(), *meta.buffers()]} == {"meta"}
    assert {p.dtype for p in meta.parameters()} == {torch.float64}
    # errors name bcn (and its BatchNorm stage) and say what to pass
    with pytest.raises(ValueError, match=r"^bcn: expected an input of shape \(\.\.\., C\) with C=4, got \(2, 3\)$"):
        m(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"^bcn \(BatchNorm stage\): training needs more than 1 value per channel"):
        m(torch.randn(1, C))
    with pytest.raises(ValueError, match=r"num_groups=0 must be a positive divisor .* norm_kwargs=\{'num_groups': g\}"):
        BatchChannelNorm(C, num_groups=0)


def test_bcn_fast_path_on_tokens_and_maps_and_the_switch():
    # the fused GroupNorm stage serves channels-last input with positions; set_fast_norms(m, False) the
    # reference; both match numpy, also on (N, C) input without positions
    C, G = 4, 2
    for shape in [(3, C), (3, 5, C), (2, 3, 2, C)]:
        x = rand(*shape, seed=156, scale=2.0, shift=1.0)
        for fast_path in (True, False):
            m = BatchChannelNorm(C, num_groups=G)
            normlight.set_fast_norms(m, fast_path)
            with torch.no_grad():
                m.weight.copy_(rand(G, seed=157) + 1)
            y = m(x)
            gw, gb = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
            want = np_bcn(x.double().numpy().reshape(shape[0], -1, C), G, gw, gb).reshape(shape)
            np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-5, atol=1e-5)
            assert any("GroupNormFunction" in n for n in graph_nodes(y)) == (fast_path and len(shape) > 2), (
                shape,
                fast_path,
            )
