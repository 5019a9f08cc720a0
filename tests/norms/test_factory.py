"""create_norm: the channels-first adapter, layout-aware factories, the one-time probe on a copy."""

import pytest
import torch
from torch import nn

import normlight
from normlight.errors import PluginError
from normlight.norms import factory as norm_factory


def test_channels_first_adapter_for_channels_last_norms():
    norm = normlight.create_norm(nn.LayerNorm, 5, layout="channels_first", elementwise_affine=False)
    x = torch.randn(2, 5, 3, 4)
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (5,)).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), ref)


def test_factory_taking_layout_gets_it_and_is_not_wrapped():
    class Cf(nn.Module):
        def __init__(self, c, layout=None):
            super().__init__()
            self.layout = layout

        def forward(self, x):
            return x

    norm = normlight.create_norm(Cf, 3, layout="channels_first")
    assert isinstance(norm, Cf) and norm.layout == "channels_first"


def test_probe_runs_once_per_factory_on_a_copy():
    class Counting(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.register_buffer("running", torch.zeros(c))

        def forward(self, x):
            self.running += 1
            return x

    norm = normlight.create_norm(Counting, 3)
    assert torch.equal(norm.running, torch.zeros(3))
    assert (Counting, None) in norm_factory._probed


def test_probe_catches_callable_returning_wrong_shape():
    with pytest.raises(PluginError, match=r"returned \(2, 3, 2\) for an input of shape \(2, 3, 4\)"):
        normlight.create_norm(lambda c: nn.Linear(c, 2), 4)
