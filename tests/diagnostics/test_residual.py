"""Residual-stream RMS, growth slope, massive activations and the recorder hooks."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from normlight.diagnostics import (
    residual,
)

# ---------------------------------------------------------------- loss spikes


def test_residual_stats_and_growth_slope():
    h = torch.randn(4, 10, 16)
    s = residual.stream_stats(h)
    a = np.abs(h.numpy())
    assert s["rms"] == pytest.approx(np.sqrt((a**2).mean()), rel=1e-5)
    assert s["max_over_median"] == pytest.approx(a.max() / np.median(a), rel=1e-2)  # torch median = lower middle
    rms = [2.0**i for i in range(6)]  # variance grows 4x per layer
    assert residual.growth_slope(rms) == pytest.approx(2 * math.log(2))
    assert residual.growth_slope([1.5] * 4) == pytest.approx(0.0)


def test_massive_activation_is_visible():
    h = torch.ones(2, 8, 32)
    h[0, 3, 5] = 1000.0
    assert residual.stream_stats(h)["max_over_median"] == pytest.approx(1000.0)


def test_residual_recorder_hooks_each_block_and_detaches():
    blocks = nn.ModuleList([nn.Identity(), nn.Identity()])
    rec = residual.ResidualRecorder(blocks)
    x = torch.full((2, 3), 2.0)
    blocks[1](blocks[0](x))
    out = rec.remove()
    assert out["rms"] == [2.0, 2.0] and not blocks[0]._forward_hooks
