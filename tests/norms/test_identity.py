"""The identity norm (norm-free baseline)."""

from __future__ import annotations

import torch

from tests.norms.reference import build


def test_identity_returns_input_and_ignores_num_features():
    x = torch.randn(2, 3, 5)
    assert build("identity", 999)(x) is x
    assert len(list(build("identity", 5).parameters())) == 0
