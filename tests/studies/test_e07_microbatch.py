"""E7's verdict on synthetic runs (every outcome) and its sweep: batch sizes carry linearly scaled LRs."""

from __future__ import annotations

import math

from normlight.studies.e07_microbatch import SETUPS, STUDY
from tests.studies.fake_runs import run


def runs(at_b1: dict, at_b64: float = 0.85, seeds: int = 3) -> list:
    out = []
    for setup in SETUPS:
        for s in range(seeds):
            out.append(run("microbatch", {"setup": setup, "batch": "b64", "seed": s}, {"val/acc1": at_b64 + 0.01 * s}))
            if setup in at_b1:
                out.append(run("microbatch", {"setup": setup, "batch": "b1", "seed": s}, {"val/acc1": at_b1[setup][s]}))
    return out


GOOD = {
    "bn": [0.2, 0.25, 0.22],
    "gn": [0.6, 0.62, 0.61],
    "gn+ws": [0.7, 0.71, 0.69],
    "bcn+ws": [0.5, 0.52, 0.51],
    "evonorm_s0": [0.6, 0.6, 0.6],
    "nf": [0.65, 0.66, 0.64],
}


def test_reproduced_at_the_smallest_batch():
    a = STUDY.analyze(runs(GOOD), {}, "cpu")
    assert a.verdict.outcome == "reproduced" and not a.missing
    assert math.isclose(a.verdict.numbers["acc_bn_b1"], (0.2 + 0.25 + 0.22) / 3)
    assert a.verdict.reason.startswith("at batch 1:")


def test_not_reproduced_when_bcn_ws_loses_to_bn():
    a = STUDY.analyze(runs(dict(GOOD, **{"bcn+ws": [0.1, 0.12, 0.11]})), {}, "cpu")
    assert a.verdict.outcome == "not reproduced" and "(b) not reproduced" in a.verdict.reason


def test_inconclusive_when_seeds_overlap_or_runs_are_missing():
    a = STUDY.analyze(runs(dict(GOOD, nf=[0.1, 0.6, 0.2])), {}, "cpu")
    assert a.verdict.outcome == "inconclusive"
    partial = STUDY.analyze(runs({k: v for k, v in GOOD.items() if k != "nf"}), {}, "cpu")
    assert partial.verdict.outcome == "inconclusive" and partial.missing == ["nf at batch 1"]
    assert STUDY.analyze([], {}, "cpu").missing == ["every training run"]


def test_sweep_scales_the_learning_rate_with_the_batch():
    (sweep,) = STUDY.sweeps("cpu", 2)
    batches = {b["label"]: b for b in sweep["grid"]["batch"]}
    assert set(batches) == {"b1", "b64"}
    assert math.isclose(batches["b1"]["model.lr"], 0.1 / 64)
    assert batches["b1"]["data"]["init_args"]["batch_size"] == 1
    assert batches["b1"]["data"]["init_args"]["eval_batch_size"] == 64  # the same validation images at every batch
    nf = next(s for s in sweep["grid"]["setup"] if s["label"] == "nf")
    assert nf["model.norm"] is None and nf["model.model_kwargs"]["variant"] == "nf"


def test_a_statistics_free_setup_near_chance_at_batch_1_is_explained():
    a = STUDY.analyze(runs(dict(GOOD, nf=[0.1, 0.12, 0.11])), {}, "cpu")
    assert any(n.startswith("nf use no batch statistics, yet stayed near chance at batch 1") for n in a.notes)
    assert not any("stayed near chance" in n for n in STUDY.analyze(runs(GOOD), {}, "cpu").notes)
