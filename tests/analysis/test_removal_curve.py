"""Removal curves: an identity block is removed first and costs nothing; FinerCut removes a dead sub-layer first."""

from __future__ import annotations

import pytest
import torch

from normlight.analysis import AnalysisInputError, analyze
from normlight.analysis.removal_curve import max_removed
from tests.analysis.models import lm_batches, make_identity, tiny_gpt


def test_identity_block_is_removed_first_at_no_cost(one_thread):
    model = tiny_gpt()
    make_identity(model.blocks[2])
    res = analyze(model, lm_batches(), ["removal_curve"], {"removal_curve": {"scores": ["bi", "angular", "random"]}})
    res = res["removal_curve"]
    base = res.scalars["baseline/loss"]
    rows = {(r["score"], r["removed"]): r for r in res.tables["curve"]}
    for score in ("bi", "angular"):
        assert rows[(score, 1)]["layers"] == "2"
        assert res.series[f"loss/{score}"].values[1] == pytest.approx(base, abs=1e-6)
        assert res.series[f"loss/{score}"].axis == "blocks removed"
        assert len(res.series[f"loss/{score}"].values) == 4  # k = 0..L-1
        assert res.scalars[f"max_removed/{score}"] >= 1
    assert rows[("random", 1)]["layers"] == "mean of orders"


def test_finercut_removes_a_dead_sublayer_first(one_thread):
    model = tiny_gpt()
    with torch.no_grad():
        model.blocks[3].mlp.fc2.weight.zero_()
        model.blocks[3].mlp.fc2.bias.zero_()
    res = analyze(model, lm_batches(), ["removal_curve"], {"removal_curve": {"scores": ["finercut", "sublayer_bi"]}})
    res = res["removal_curve"]
    rows = {(r["score"], r["removed"]): r for r in res.tables["curve"]}
    assert rows[("finercut", 1)]["layers"] == "3.mlp"
    assert rows[("sublayer_bi", 1)]["layers"] == "3.mlp"
    assert res.series["loss/finercut"].values[1] == pytest.approx(res.scalars["baseline/loss"], abs=1e-6)
    assert len(res.series["loss/finercut"].values) == 8 and res.series["loss/finercut"].axis == "sub-layers removed"


def test_max_removed_counts_the_prefix_within_tolerance():
    assert max_removed([2.0, 2.05, 2.1, 2.3], 0.05) == 2
    assert max_removed([2.0, 2.3, 2.05], 0.05) == 0  # a later point back inside does not count
    assert max_removed([2.0], 0.05) == 0


def test_healing_is_relative_to_the_equally_healed_full_model(one_thread):
    batches = lm_batches()
    res = analyze(
        tiny_gpt(),
        batches,
        ["removal_curve"],
        {"removal_curve": {"scores": ["bi"], "heal_steps": 3, "heal_lr": 1e-2}},
        train_batches=lambda: iter(batches),
    )["removal_curve"]
    healed = res.series["loss_healed/bi"].values
    assert healed[0] == res.scalars["baseline_healed/loss"] < res.scalars["baseline/loss"]
    assert all(h < u for h, u in zip(healed[1:], res.series["loss/bi"].values[1:]))
    assert "max_removed_healed/bi" in res.scalars


def test_bad_scores_and_missing_training_data_are_clear_errors(one_thread):
    with pytest.raises(AnalysisInputError, match="unknown score.*'bl'.*bi, angular"):
        analyze(tiny_gpt(), lm_batches(), ["removal_curve"], {"removal_curve": {"scores": ["bl"]}})
    with pytest.raises(AnalysisInputError, match="healing.*needs training data"):
        analyze(tiny_gpt(), lm_batches(), ["removal_curve"], {"removal_curve": {"heal_steps": 2}})
