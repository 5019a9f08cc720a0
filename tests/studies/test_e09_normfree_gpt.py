"""E9's verdict on synthetic runs: every outcome; early-layer entropy is the first half of the layers."""

from __future__ import annotations

import math

from normlight.studies.e09_normfree_gpt import ARMS, ENTROPY, STUDY
from tests.studies.fake_runs import flat, run


def runs(loss: dict, early: dict, late: float = 0.5, seeds: int = 3) -> list:
    out = []
    for arm in ARMS:
        for s in range(seeds):
            e = early.get(arm, [0.6] * seeds)[s]
            hist = {f"{ENTROPY}/l{i:02d}": flat(v) for i, v in enumerate([e, e, late, late])}
            out.append(run("gpt", {"arm": arm, "seed": s}, {"val/loss": loss.get(arm, [2.0] * seeds)[s]}, hist))
    return out


def test_reproduced_and_the_perplexity_gain():
    a = STUDY.analyze(
        runs(
            {"free-gelu": [2.3, 2.31, 2.32], "free-relu": [2.2, 2.21, 2.19]},
            {"free-gelu": [0.9, 0.92, 0.91], "free-relu": [0.7, 0.72, 0.71]},
        ),
        {},
        "cpu",
    )
    assert a.verdict.outcome == "reproduced" and not a.missing
    assert math.isclose(a.verdict.numbers["early_entropy_free-gelu"], 0.91)
    assert math.isclose(a.verdict.numbers["ppl_gain_relu_over_gelu_free"], 1 - math.exp(2.2 - 2.31), rel_tol=1e-6)
    assert a.tables[0].columns[-4:] == ["H l0", "H l1", "H l2", "H l3"]


def test_not_reproduced_when_gelu_wins():
    a = STUDY.analyze(
        runs(
            {"free-gelu": [2.2, 2.21, 2.19], "free-relu": [2.3, 2.31, 2.32]},
            {"free-gelu": [0.9, 0.92, 0.91], "free-relu": [0.7, 0.72, 0.71]},
        ),
        {},
        "cpu",
    )
    assert a.verdict.outcome == "not reproduced"


def test_inconclusive_on_overlapping_entropy_or_missing_arm():
    a = STUDY.analyze(
        runs(
            {"free-gelu": [2.3, 2.31, 2.32], "free-relu": [2.2, 2.21, 2.19]},
            {"free-gelu": [0.9, 0.6, 0.8], "free-relu": [0.7, 0.85, 0.75]},
        ),
        {},
        "cpu",
    )
    assert a.verdict.outcome == "inconclusive" and "(b) inconclusive" in a.verdict.reason
    partial = STUDY.analyze([r for r in runs({}, {}) if r.labels["arm"] != "free-relu"], {}, "cpu")
    assert partial.verdict.outcome == "inconclusive" and partial.missing == ["runs of free-relu"]


def test_sweep_varies_placement_and_activation_at_one_lr():
    (sweep,) = STUDY.sweeps("cpu", 3)
    arms = {a["label"]: a for a in sweep["grid"]["arm"]}
    assert arms["free-relu"]["model.placement"] == "none" and arms["free-relu"]["model.model_kwargs"]["mlp"] == "relu"
    assert arms["ln-gelu"]["model.placement"] == "pre" and sweep["fixed"]["model.lr"] == 1.0e-3


def test_tiny_effects_uniform_attention_and_the_ln_controls_are_noted():
    a = STUDY.analyze(
        runs(
            {
                "free-gelu": [2.64, 2.65, 2.645],
                "free-relu": [2.57, 2.58, 2.575],
                "ln-gelu": [2.49] * 3,
                "ln-relu": [2.43] * 3,
            },
            {
                "free-gelu": [1.0, 1.0, 1.0],
                "free-relu": [0.9998, 0.9997, 0.9999],
                "ln-gelu": [0.88] * 3,
                "ln-relu": [0.87] * 3,
            },
            late=0.999,
        ),
        {},
        "cpu",
    )
    notes = " ".join(a.notes)
    assert "entropy difference of 2.0e-04" in notes and "nearly uniform in every layer" in notes
    assert f"ReLU's perplexity is {1 - math.exp(2.43 - 2.49):.1%} lower" in notes
    b = STUDY.analyze(runs({}, {"free-gelu": [0.9, 0.92, 0.91], "free-relu": [0.7, 0.72, 0.71]}), {}, "cpu")
    assert not any("entropy difference" in n or "nearly uniform" in n for n in b.notes)
