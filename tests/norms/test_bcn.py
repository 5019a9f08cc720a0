"""Batch-Channel Normalization (Khaled et al. 2023, norms.md 11) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import normlight
from normlight.norms.bcn import BatchChannelNorm
from tests.norms.reference import np_bcn, rand


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
