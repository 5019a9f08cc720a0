"""Unit tests of the registry: name normalization, spec kinds, context by signature, suggestions."""

import functools

import pytest
import torch
from torch import nn

import normlight
from normlight import registry
from normlight.errors import PluginOptionError, UnknownNameError


@pytest.mark.parametrize("name", ["rmsnorm", "RMSNorm", "rms-norm", "RMS_NORM", " rmsnorm "])
def test_name_normalization(name):
    assert registry.normalize_name(name) == "rmsnorm"
    assert registry.lookup("norms", name).name == "rmsnorm"


def test_builtins_are_registered_through_entry_points():
    entry = registry.lookup("norms", "layernorm")
    assert (entry.dist, entry.value) == ("normlight", "normlight.norms.layernorm:LayerNorm")
    assert {"pre", "post", "peri", "ngpt"} <= set(normlight.list_placements())
    assert {"gpt-tiny", "vit-tiny", "resnet20"} <= set(normlight.list_models())
    assert normlight.list_models("gpt-*") == ["gpt-medium", "gpt-nano", "gpt-small", "gpt-tiny"]


@pytest.mark.parametrize("typo, suggestion", [("rmsnrom", "rmsnorm"), ("layer_nrm", "layernorm"), ("dyT2", "dyt")])
def test_unknown_name_lists_available_and_closest(typo, suggestion):
    with pytest.raises(UnknownNameError) as err:
        registry.lookup("norms", typo)
    msg = str(err.value)
    assert f"unknown norm {typo!r}" in msg and f"Did you mean {suggestion!r}?" in msg
    assert "Available norms:" in msg and "layernorm" in msg


def test_unknown_name_without_close_match_still_lists():
    with pytest.raises(UnknownNameError) as err:
        normlight.create_model("zzzz")
    assert "Did you mean" not in str(err.value) and "gpt-tiny" in str(err.value)


class Recorder(nn.Module):
    """Records the context it was given; accepts only some context keywords."""

    def __init__(self, num_features, scale=1.0, layer_idx=None, site=None, dtype=None):
        super().__init__()
        self.seen = dict(layer_idx=layer_idx, site=site, dtype=dtype, scale=scale)
        self.num_features = num_features

    def forward(self, x):
        return x * self.seen["scale"]


def test_class_spec_receives_only_named_context():
    norm = normlight.create_norm(Recorder, 4, layer_idx=2, num_layers=8, site="qk", device="cpu", dtype=torch.float64)
    assert norm.seen == dict(layer_idx=2, site="qk", dtype=torch.float64, scale=1.0)  # num_layers/device not named


def test_partial_spec_keeps_bound_options_and_context():
    norm = normlight.create_norm(functools.partial(Recorder, scale=3.0), 4, layer_idx=5)
    assert norm.seen["scale"] == 3.0 and norm.seen["layer_idx"] == 5


def test_callable_spec_with_var_kwargs_gets_no_context():
    seen = {}

    def factory(num_features, **kwargs):
        seen.update(kwargs)
        return nn.LayerNorm(num_features)

    normlight.create_norm(factory, 4, layer_idx=1, site="final", eps=1e-3)
    assert seen == {"eps": 1e-3}  # options pass through **kwargs; context only when named


def test_torch_layernorm_is_a_plugin_as_it_is():
    norm = normlight.create_norm(nn.LayerNorm, 6, layer_idx=0, num_layers=4, site="attn_in", device="cpu", eps=1e-6)
    assert isinstance(norm, nn.LayerNorm) and norm.eps == 1e-6


def test_explicit_option_wins_over_context():
    norm = normlight.create_norm(Recorder, 4, scale=2.0, layer_idx=7)
    assert norm.seen["layer_idx"] == 7 and norm.seen["scale"] == 2.0


def test_unknown_option_is_named_with_valid_ones():
    with pytest.raises(PluginOptionError) as err:
        normlight.create_norm(Recorder, 4, scael=2.0)
    msg = str(err.value)
    assert "'scael'" in msg and "Recorder" in msg and "valid options: scale" in msg


def test_rejected_option_value_names_plugin():
    def grouped(c, num_groups=4):
        return nn.GroupNorm(num_groups, c)

    with pytest.raises(PluginOptionError, match=r"grouped rejected options \{'num_groups': 3\}: .*divisible"):
        normlight.create_norm(grouped, 8, num_groups=3)


def test_bad_spec_type():
    with pytest.raises(PluginOptionError, match="must be a name, a class, a callable or a functools.partial"):
        normlight.create_norm(42, 4)
