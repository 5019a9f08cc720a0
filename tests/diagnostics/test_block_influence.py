"""Block influence 1 - cos(h_in, h_out): identity 0, negation 2, numpy; the probe on known blocks."""

import numpy as np
import pytest
import torch
from torch import nn

from normlight.diagnostics import block_influence

# ---------------------------------------------------------------- loss spikes


def test_block_influence_identity_zero_negation_two_and_numpy():
    h = torch.randn(2, 7, 8)
    assert block_influence.block_influence(h, h.clone()) == pytest.approx(0.0, abs=1e-6)
    assert block_influence.block_influence(h, -h) == pytest.approx(2.0, abs=1e-6)
    g = torch.randn(2, 7, 8)
    a, b = h.numpy().reshape(-1, 8), g.numpy().reshape(-1, 8)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert block_influence.block_influence(h, g) == pytest.approx(1 - cos.mean(), rel=1e-5)
    # feature maps: channels are dim 1
    f, f2 = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    a = f.permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    b = f2.permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert block_influence.block_influence(f, f2) == pytest.approx(1 - cos.mean(), rel=1e-5)


def test_probe_block_influence_on_identity_and_scaling_blocks():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Identity(), nn.Linear(4, 4), nn.Identity()])
            with torch.no_grad():
                self.blocks[1].weight.copy_(3 * torch.eye(4))  # positive scaling: direction unchanged
                self.blocks[1].bias.zero_()

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x

    m = Model()
    assert block_influence.probe_block_influence(m, m.blocks, torch.randn(3, 5, 4)) == pytest.approx(
        [0, 0, 0], abs=1e-6
    )
