"""Discovery through real entry points of real (fixture) distributions: listing, selection, errors."""

import sys

import pytest
import torch

import normlight
from normlight import plugins
from normlight.errors import AmbiguousNameError, PluginError, UnknownNameError
from normlight.norms import factory as norm_factory


def test_listing_is_lazy_and_shows_fixture_distributions(with_fixture_plugins):
    names = normlight.list_norms()
    assert {"fixture_good", "fixture_broken", "fixture_wrongshape"} <= set(names)
    # the duplicate name is listed qualified, once per distribution
    assert "normlight-fixture-plugins:fixture_dup" in names and "normlight-fixture-dup:fixture_dup" in names
    assert "fixture_dup" not in names
    assert not any(m.startswith("nl_fixture") for m in sys.modules), "listing must not import plugin code"
    entry = next(e for e in plugins.entries("norms") if e.name == "fixture_good")
    assert (entry.dist, entry.version, entry.value) == (
        "normlight-fixture-plugins",
        "0.3.1",
        "nl_fixture.norms:CenteredScale",
    )


def test_good_plugin_works_beside_broken_one(with_fixture_plugins):
    with pytest.raises(PluginError) as err:
        normlight.create_norm("fixture_broken", 8)
    msg = str(err.value)
    assert "fixture_broken" in msg and "normlight-fixture-plugins 0.3.1" in msg and "nl_fixture.broken:Anything" in msg
    assert "ModuleNotFoundError" in msg and "normlight_fixture_missing_dependency" in msg
    # the rest of the catalog keeps working, and selecting imports only what is selected
    norm = normlight.create_norm("Fixture-Good", 8, gain=2.0)
    x = torch.randn(4, 8)
    torch.testing.assert_close(norm(x), (x - x.mean(-1, keepdim=True)) * 2.0)
    assert "nl_fixture.norms" in sys.modules


def test_selecting_a_broken_placement_raises_plugin_error(with_fixture_plugins):
    with pytest.raises(PluginError, match="fixture_broken_block.*failed to import"):
        normlight.get_placement("fixture_broken_block")


@pytest.mark.parametrize(
    "name, fault",
    [
        (
            "fixture_wrongshape",
            "returned (2, 3, 7) for an input of shape (2, 3, 8); a norm must return the input's shape",
        ),
        ("fixture_nonfinite", "returned non-finite values"),
        ("fixture_notmodule", "returned function; a norm factory must return a torch.nn.Module"),
    ],
)
def test_contract_violations_name_plugin_and_distribution(with_fixture_plugins, name, fault):
    with pytest.raises(PluginError) as err:
        normlight.create_norm(name, 8)
    assert f"'{name}' (distribution normlight-fixture-plugins 0.3.1" in str(err.value)
    assert fault in str(err.value)


def test_duplicate_names_are_reported_with_both_and_qualified_name_selects(with_fixture_plugins):
    with pytest.raises(AmbiguousNameError) as err:
        normlight.create_norm("fixture_dup", 8)
    msg = str(err.value)
    assert "normlight-fixture-plugins 0.3.1" in msg and "normlight-fixture-dup 1.0.0" in msg
    assert "'normlight-fixture-plugins:fixture_dup'" in msg and "'normlight-fixture-dup:fixture_dup'" in msg
    x = torch.randn(3, 8)
    torch.testing.assert_close(normlight.create_norm("normlight-fixture-dup:fixture_dup", 8)(x), x / 2)
    centred = normlight.create_norm("normlight-fixture-plugins:fixture_dup", 8)(x)
    torch.testing.assert_close(centred, x - x.mean(-1, keepdim=True))


def test_unknown_qualified_name(with_fixture_plugins):
    with pytest.raises(UnknownNameError, match="unknown norm 'nosuchdist:fixture_good'"):
        normlight.create_norm("nosuchdist:fixture_good", 8)


def test_invalid_option_names_option_and_plugin(with_fixture_plugins):
    with pytest.raises(normlight.PluginOptionError) as err:
        normlight.create_norm("fixture_good", 8, gian=2.0)
    msg = str(err.value)
    assert "'gian'" in msg and "'fixture_good' (distribution normlight-fixture-plugins 0.3.1" in msg and "gain" in msg


def test_probe_leaves_module_state_untouched(with_fixture_plugins):
    norm_factory._probed.clear()  # force the first-build probe
    norm = normlight.create_norm("fixture_good", 8)
    assert norm.training and int(norm.calls) == 0, "the probe must run on a copy"
