"""E19's verdict on synthetic runs (every outcome) and its fold measurement on a real (tiny) PRepBN ViT."""

from __future__ import annotations

import math

from normlight.studies.e19_prepbn import STUDY, count_norms, fold_measurement
from tests.studies.fake_runs import run

FOLD = {"max_abs_diff": 1e-8, "rel_diff": 1e-7, "norms_before": 9, "norms_after": 1, "block_norms_left": 0}


def runs(acc: dict, diverged: tuple = ()) -> list:
    return [
        run("vit", {"model.norm": n, "seed": s}, {"val/acc1": v}, diverged=(n, s) in diverged)
        for n, values in acc.items()
        for s, v in enumerate(values)
    ]


GOOD = {"layernorm": [0.8, 0.81, 0.82], "batchnorm": [0.5, 0.1, 0.55], "prepbn": [0.79, 0.8, 0.78]}


def test_reproduced():
    a = STUDY.analyze(runs(GOOD), FOLD, "cpu")
    assert a.verdict.outcome == "reproduced" and not a.missing
    assert a.verdict.numbers["norms_after"] == 1.0


def test_not_reproduced_when_the_swap_trains_as_well_or_fold_is_inexact():
    a = STUDY.analyze(runs(dict(GOOD, batchnorm=[0.85, 0.86, 0.84])), FOLD, "cpu")
    assert a.verdict.outcome == "not reproduced" and "(a) not reproduced" in a.verdict.reason
    b = STUDY.analyze(runs(GOOD), dict(FOLD, rel_diff=1e-2), "cpu")
    assert b.verdict.outcome == "not reproduced" and "(c) not reproduced" in b.verdict.reason
    c = STUDY.analyze(runs(GOOD), dict(FOLD, block_norms_left=2), "cpu")
    assert c.verdict.outcome == "not reproduced"


def test_inconclusive_on_overlap_or_missing_measurement_and_diverged_runs_score_chance():
    a = STUDY.analyze(runs(dict(GOOD, batchnorm=[0.79, 0.4, 0.83])), FOLD, "cpu")
    assert a.verdict.outcome == "inconclusive"
    b = STUDY.analyze(runs(GOOD), {}, "cpu")
    assert b.verdict.outcome == "inconclusive" and "the fold measurement (measure())" in b.missing
    c = STUDY.analyze(runs(dict(GOOD, batchnorm=[0.9, 0.5, 0.55]), diverged={("batchnorm", 0)}), FOLD, "cpu")
    assert math.isclose(c.verdict.numbers["acc_batchnorm"], (0.1 + 0.5 + 0.55) / 3)
    assert c.verdict.numbers["diverged_batchnorm"] == 1.0


def test_fold_measurement_on_a_tiny_vit():
    kw = dict(img_size=8, in_chans=1, patch_size=4, depth=2, dim=16, num_heads=2)
    m = fold_measurement(kw, reps=1, calib_steps=2)
    assert m["norms_before"] == 5 and m["norms_after"] == 1 and m["block_norms_left"] == 0  # 2 per block + final
    assert m["rel_diff"] < 1e-5 and m["ms_folded"] > 0


def test_count_norms_counts_nested_batch_norms_once():
    import normlight

    vit = normlight.create_model(
        "vit-tiny", img_size=8, in_chans=1, patch_size=4, depth=3, dim=16, num_heads=2, norm="prepbn"
    )
    assert count_norms(vit) == (1, 6)
    assert count_norms(
        normlight.create_model("vit-tiny", img_size=8, in_chans=1, patch_size=4, depth=1, dim=16, num_heads=2)
    ) == (0, 0)


def test_a_swap_that_underperforms_without_collapsing_is_said_so():
    a = STUDY.analyze(runs(dict(GOOD, batchnorm=[0.5, 0.52, 0.55])), FOLD, "cpu")
    assert any("did not collapse at this scale" in n for n in a.notes)
    b = STUDY.analyze(runs(GOOD, diverged={("batchnorm", 1)}), FOLD, "cpu")
    assert not any("did not collapse" in n for n in b.notes)
