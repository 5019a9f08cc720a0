"""Adaptive gradient clipping, unit-wise (NFNets; norms.md 10)."""

import numpy as np
import pytest
import torch

from normlight.tasks.agc import adaptive_grad_clip_

# ---------------------------------------------------------------- Fixup (norms.md 9a)


def test_agc_unitwise_numeric():
    lin = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)  # each unit (row) has norm 2
    lin.weight.grad = torch.tensor([[0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0]])  # rows of norm 1
    adaptive_grad_clip_(lin, clipping=0.01, eps=1e-3)
    g = lin.weight.grad.numpy()
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), [0.02, 0.02], rtol=1e-6)
    np.testing.assert_allclose(g[0], [0.01] * 4, rtol=1e-6)
    # global-norm clipping to the same total would keep the rows' relative sizes differently: check we are unit-wise
    small = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        small.weight.copy_(torch.tensor([[1.0, 1, 1, 1], [100.0, 0, 0, 0]]))
    small.weight.grad = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    adaptive_grad_clip_(small.parameters(), clipping=0.01)
    np.testing.assert_allclose(small.weight.grad[:, 0].numpy(), [0.02, 1.0], rtol=1e-6)  # only row 0 clipped


def test_agc_eps_floor_and_exclude():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight.zero_()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model[1].weight.grad = torch.full_like(model[1].weight, 100.0)
    adaptive_grad_clip_(model, clipping=0.1, eps=1e-3, exclude=("1.",))
    # zero weights: max per unit = 0.1 * 1e-3
    norms = model[0].weight.grad.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((3,), 1e-4))
    assert bool((model[1].weight.grad == 100.0).all())  # excluded (classifier) untouched
    with pytest.raises(ValueError, match="clipping"):
        adaptive_grad_clip_(model, clipping=0.0)
