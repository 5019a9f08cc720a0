"""E5's verdict on synthetic runs: every outcome, partial data, diverged runs scored as the uniform loss."""

from __future__ import annotations

import math

from normlight.studies.e05_bn_in_lm import FLUCT, STUDY
from tests.studies.fake_runs import flat, run


def runs(losses: dict, fl_lm: list, fl_vis: list, diverged_bn: bool = False) -> list:
    out = []
    for norm, values in losses.items():
        for seed, v in enumerate(values):
            hist = {FLUCT: flat(fl_lm[seed])} if norm != "layernorm" else {}
            div = diverged_bn and norm == "batchnorm" and seed == 0
            out.append(run("lm", {"model.norm": norm, "seed": seed}, {"val/loss": v}, hist, diverged=div))
    for seed, f in enumerate(fl_vis):
        out.append(run("vision", {"model.norm": "batchnorm", "seed": seed}, {"val/acc1": 0.8}, {FLUCT: flat(f)}))
    return out


LN, BN, PN = [2.00, 2.01, 2.02], [2.50, 2.52, 2.49], [2.20, 2.21, 2.19]


def test_reproduced():
    a = STUDY.analyze(
        runs({"layernorm": LN, "batchnorm": BN, "powernorm": PN}, [0.5, 0.6, 0.55], [0.05, 0.06, 0.055]), {}, "cpu"
    )
    assert a.verdict.outcome == "reproduced" and not a.missing
    assert math.isclose(a.verdict.numbers["bn_minus_ln"], sum(BN) / 3 - sum(LN) / 3)
    assert math.isclose(a.verdict.numbers["fluct_ratio_lm_over_vision"], 10.0)


def test_not_reproduced_when_bn_beats_ln():
    a = STUDY.analyze(
        runs({"layernorm": BN, "batchnorm": LN, "powernorm": PN}, [0.5, 0.6, 0.55], [0.05, 0.06, 0.055]), {}, "cpu"
    )
    assert a.verdict.outcome == "not reproduced"
    assert "(a) not reproduced" in a.verdict.reason


def test_not_reproduced_when_vision_fluctuates_more():
    a = STUDY.analyze(
        runs({"layernorm": LN, "batchnorm": BN, "powernorm": PN}, [0.05, 0.06, 0.055], [0.5, 0.6, 0.55]), {}, "cpu"
    )
    assert a.verdict.outcome == "not reproduced" and "(b) not reproduced" in a.verdict.reason


def test_inconclusive_on_overlap_and_on_missing_control():
    overlap = {"layernorm": [2.0, 2.5, 2.2], "batchnorm": [2.1, 2.4, 2.3], "powernorm": [2.0, 2.6, 2.2]}
    assert (
        STUDY.analyze(runs(overlap, [0.5, 0.6, 0.55], [0.05, 0.06, 0.055]), {}, "cpu").verdict.outcome == "inconclusive"
    )
    partial = STUDY.analyze(runs({"layernorm": LN, "batchnorm": BN, "powernorm": PN}, [0.5, 0.6, 0.55], []), {}, "cpu")
    assert partial.verdict.outcome == "inconclusive" and partial.missing == ["ViT + BatchNorm control runs"]


def test_a_diverged_run_scores_the_uniform_loss():
    a = STUDY.analyze(
        runs(
            {"layernorm": LN, "batchnorm": [0.1, 2.52, 2.49], "powernorm": PN},
            [0.5, 0.6, 0.55],
            [0.05, 0.06, 0.055],
            diverged_bn=True,
        ),
        {},
        "cpu",
    )
    assert math.isclose(a.verdict.numbers["loss_bn"], (math.log(256) + 2.52 + 2.49) / 3)


def test_sweeps_pair_the_lm_with_a_vision_control():
    lm, vision = STUDY.sweeps("cpu", 3)
    assert lm["grid"]["model.norm"] == ["layernorm", "batchnorm", "powernorm"]
    assert vision["grid"]["model.norm"] == ["batchnorm"] and vision["grid"]["seed_everything"] == [0, 1, 2]
    assert lm["fixed"]["data"]["class_path"] == "WordNetGlossesDataModule"
    assert STUDY.sweeps("smoke", 1)[1]["fixed"]["data"]["class_path"] == "DigitsDataModule"
