"""A norm module cast to bf16 (as under `precision="bf16-true"`) still runs on bf16 inputs, train and eval."""

import pytest
import torch

import normlight
from normlight import registry

BUILTINS = [n for n in normlight.list_norms() if registry.lookup("norms", n).dist == "normlight"]
NEEDS = {"layernorm_scaling": {"layer_idx": 1}, "groupnorm": {"num_groups": 4}, "bcn": {"num_groups": 4},
         "evonorm_s0": {"num_groups": 4}}


@pytest.mark.parametrize("name", BUILTINS)
def test_bf16_module_on_bf16_input(name):
    norm = normlight.create_norm(name, 16, **NEEDS.get(name, {})).to(torch.bfloat16)
    x = torch.randn(4, 6, 16, dtype=torch.bfloat16)
    for train in (True, False):
        norm.train(train)
        y = norm(x)
        assert y.dtype == torch.bfloat16 and y.shape == x.shape and torch.isfinite(y.float()).all(), (name, train)
