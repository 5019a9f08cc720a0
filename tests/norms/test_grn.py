"""Global Response Normalization (Woo et al. 2023, ConvNeXt V2) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normlight.norms.grn import GRN
from tests.norms.reference import build, np_grn, randn, run


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


def test_grn_channels_first_map_whose_width_equals_the_channel_count():
    # (N, C, H, W) with W == C: the channels-last fast path must not take it for (N, *positions, C)
    c = 4
    gamma, beta = randn(c, seed=34), randn(c, seed=35)
    m = build("grn", c, layout="channels_first", dtype=torch.float64)
    with torch.no_grad():
        m.gamma.copy_(torch.from_numpy(gamma)), m.beta.copy_(torch.from_numpy(beta))
    x = randn(2, c, 3, c, seed=36)
    y = run(m, x, torch.float64)
    np.testing.assert_allclose(np.moveaxis(y, 1, -1), np_grn(np.moveaxis(x, 1, -1), gamma, beta), rtol=1e-10)


@pytest.mark.parametrize("fast_path", [True, False])
def test_grn_normalizes_a_bf16_input_in_float32(fast_path):
    # with trained (non-zero) gamma and beta: the norms and their mean in float32, one rounding at the end
    from normlight.norms.fast import set_fast_norms

    m = GRN(16)
    set_fast_norms(m, fast_path)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        m.gamma.copy_(torch.randn(16, generator=g)), m.beta.copy_(torch.randn(16, generator=g))
    x = (torch.randn(2, 5, 5, 16, generator=g) * 3 + 0.5).bfloat16()
    y = m(x).double()
    want = torch.from_numpy(
        np_grn(x.double().numpy(), m.gamma.detach().double().numpy(), m.beta.detach().double().numpy())
    )
    assert ((y - want).abs() <= 2**-8 * want.abs() + 1e-5 * want.abs().max()).all()
