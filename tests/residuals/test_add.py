"""add, scaled, depth_scaled and gate against their formulas; their composition with the placements' adds."""

import math

import numpy as np
import pytest
import torch

import normlight

G = torch.Generator().manual_seed(0)
X, F = torch.randn(2, 3, 8, generator=G, dtype=torch.float64), torch.randn(2, 3, 8, generator=G, dtype=torch.float64)


@pytest.mark.parametrize(
    "name, options, scale",
    [("add", {}, 1.0), ("scaled", {}, 0.2), ("scaled", {"scale": 0.1}, 0.1), ("depth_scaled", {}, 1 / math.sqrt(9))],
)
def test_branch_scaling(name, options, scale):
    r = normlight.create_residual(name, 8, site="attn", layer_idx=2, num_layers=9, **options)
    np.testing.assert_allclose(r(X, F).numpy(), X.numpy() + scale * F.numpy(), rtol=1e-12)


def test_gate_starts_at_zero_learns_and_is_a_diagnostic():
    r = normlight.create_residual("gate", 8, site="mlp").double()
    assert torch.equal(r(X, F), X) and r.diagnostics() == {"gate": 0.0}
    r(X, F).sum().backward()
    assert r.gate.grad is not None and r.gate.grad.item() == pytest.approx(F.sum().item())


def test_gate_is_one_scalar_per_branch_in_any_placement():
    model = normlight.create_model("gpt-nano", depth=2, placement="peri", residual="gate")
    gates = [n for n, _ in model.named_parameters() if n.endswith(".gate")]
    assert gates == [f"blocks.{i}.{s}_residual.gate" for i in range(2) for s in ("attn", "mlp")]
    assert model.blocks[0].attn_out_norm is not None  # the placement's norms stay
