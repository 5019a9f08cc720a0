"""Painters interventions: swapping two identical layers changes nothing; the deltas match direct evaluations."""

from __future__ import annotations

import pytest

from normlight.analysis import analyze
from normlight.analysis.painters import interventions
from tests.analysis.models import lm_batches, make_identity, tiny_gpt


def test_swapping_identical_layers_and_repeating_an_identity_change_nothing(one_thread):
    model = tiny_gpt()
    model.blocks[2].load_state_dict(model.blocks[1].state_dict())  # blocks 1 and 2 identical (Pre-LN: no layer index)
    make_identity(model.blocks[3])
    res = analyze(model, lm_batches(), ["painters"])["painters"]
    rows = {r["intervention"]: r for r in res.tables["interventions"]}
    assert rows["swap 1,2"]["delta_loss"] == 0.0
    assert rows["repeat 3"]["delta_loss"] == 0.0 and rows["skip 3"]["delta_loss"] == pytest.approx(0.0, abs=1e-6)
    assert abs(rows["swap 0,1"]["delta_loss"]) > 1e-4  # a real swap does change the model
    assert res.series["delta_loss/swap"].values[1] == 0.0
    assert {"delta_loss/parallel_middle", "delta_loss/reverse_middle"} <= set(res.scalars)


def test_interventions_cover_every_layer():
    kinds = [k for k, *_ in interventions(5, keep_ends=1)]
    assert kinds.count("skip") == 5 and kinds.count("swap") == 4 and kinds.count("repeat") == 5
    par = next(p for k, _, _, p in interventions(5) if k == "parallel")
    assert par.steps == (0, (1, 2, 3), 4)
    assert [k for k, *_ in interventions(2)].count("parallel") == 0  # no middle to run in parallel
