"""Gradient norms on known gradients."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from normlight.diagnostics import (
    grad_norm,
)

# ---------------------------------------------------------------- loss spikes


def test_grad_norms_on_known_gradients():
    # loss = sum(c_i * w_i) has gradient c_i exactly
    blocks = nn.ModuleList([nn.Linear(3, 2, bias=False), nn.Linear(2, 4, bias=False)])
    consts = [torch.randn_like(p) for p in blocks.parameters()]
    sum((c * p).sum() for c, p in zip(consts, blocks.parameters())).backward()
    want = [float(np.linalg.norm(c.numpy())) for c in consts]
    assert float(grad_norm.global_grad_norm(blocks.parameters())) == pytest.approx(math.hypot(*want), rel=1e-6)
    assert grad_norm.block_grad_norms(blocks)["block"] == pytest.approx(want, rel=1e-6)
    assert grad_norm.coefficient_of_variation(want) == pytest.approx(np.std(want) / np.mean(want))
    assert grad_norm.coefficient_of_variation([2.0, 2.0, 2.0]) == 0.0
