"""The ``normlight.analyses`` entry-point group: built-ins and a real third-party distribution, options checked."""

from __future__ import annotations

import pytest

from normlight.analysis import analyze, list_analyses, resolve_names
from normlight.errors import PluginError, PluginOptionError, UnknownNameError
from tests.analysis.models import image_batches, lm_batches, tiny_gpt, tiny_vit

BUILTIN = {
    "block_influence",
    "angular_distance",
    "removal_curve",
    "painters",
    "logit_lens",
    "representations",
    "norm_stats",
}


def test_builtins_are_registered_and_all_runs_them_first():
    assert BUILTIN <= set(list_analyses())
    assert resolve_names("all")[:7] == list(resolve_names(None))[:7]
    assert set(resolve_names("all")[:7]) == BUILTIN and resolve_names("all")[6] == "removal_curve"


@pytest.mark.parametrize("family", ["gpt", "vit", "vit-lape"])
def test_every_builtin_runs_on_each_family(family, one_thread):
    if family == "gpt":
        model, batches = tiny_gpt(depth=3), lm_batches(n=1)
    else:
        model = tiny_vit(lape=family == "vit-lape")
        batches = image_batches(n=1)
    results = analyze(model, batches, sorted(BUILTIN))
    assert set(results) == BUILTIN
    for res in results.values():
        assert res.scalars and all(isinstance(v, float) for v in res.scalars.values())
        assert all(v == v for v in res.scalars.values()), res.scalars  # no NaN on a healthy model
        assert res.metrics() and all(name.startswith(f"analysis/{res.name}/") for name, _, _ in res.metrics())


def test_a_plugin_analysis_runs_with_its_options(with_fixture_plugins, one_thread):
    assert "fixture_stream_power" in list_analyses()
    model = tiny_gpt()
    res = analyze(model, lm_batches(), ["fixture_stream_power"], {"fixture_stream_power": {"scale": 2.0}})
    res = res["fixture_stream_power"]
    assert res.scalars["last"] == pytest.approx(2.0 * res.series["power"].values[-1])
    assert "fixture_stream_power" in resolve_names("all")


def test_bad_names_options_and_results_are_clear_errors(with_fixture_plugins, one_thread):
    model, batches = tiny_gpt(), lm_batches(n=1)
    with pytest.raises(UnknownNameError, match="unknown analysis 'logit_len'.*Did you mean 'logit_lens'"):
        analyze(model, batches, ["logit_len"])
    with pytest.raises(PluginOptionError, match="logit_lens.*does not accept option.*'tolerence'.*valid options: tol"):
        analyze(model, batches, ["logit_lens"], {"logit_lens": {"tolerence": 0.1}})
    with pytest.raises(PluginOptionError, match="not selected.*painters"):
        analyze(model, batches, ["logit_lens"], {"painters": {}})
    with pytest.raises(PluginError, match="fixture_not_a_result.*returned dict, not an AnalysisResult"):
        analyze(model, batches, ["fixture_not_a_result"])
