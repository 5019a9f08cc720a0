"""E8's verdict on synthetic runs: every outcome; stability uses the unigram floor passed in `extra`."""

import pytest

from normlight.studies.e08_qk_norm import STUDY
from tests.studies.synthetic import run

LRS = [3e-3, 1e-2, 3e-2, 1e-1]
FLOOR = {"unigram_nats": 3.0}


def runs_for(limits, seeds=2):
    """limits: variant -> largest stable LR (runs above it end at the floor)."""
    out = []
    for v, top in limits.items():
        for lr in LRS:
            for seed in range(seeds):
                loss = 2.0 if lr <= top else 3.1
                hist = {"diag/attn_max_logit": [(10, 5.0), (20, 9.0)]}
                out.append(
                    run(
                        seed=seed,
                        final={"val/loss": loss, "diag/attn_max_logit": 9.0},
                        history=hist,
                        variant=v,
                        model__lr=lr,
                    )
                )
    return out


@pytest.mark.parametrize(
    "limits, seeds, outcome",
    [
        ({"pre": 1e-2, "pre+qk_norm": 3e-2, "hybrid": 3e-2}, 2, "reproduced"),
        ({"pre": 1e-2, "pre+qk_norm": 1e-2, "hybrid": 3e-2}, 2, "not reproduced"),
        ({"pre": 3e-2, "pre+qk_norm": 1e-2, "hybrid": 3e-2}, 2, "not reproduced"),
        ({"pre": 1e-1, "pre+qk_norm": 1e-1, "hybrid": 1e-1}, 2, "inconclusive"),  # grid never finds Pre-LN's limit
        ({"pre": 1e-2, "pre+qk_norm": 3e-2, "hybrid": 3e-2}, 1, "inconclusive"),
    ],
)
def test_every_outcome(limits, seeds, outcome):
    a = STUDY.analyze(runs_for(limits, seeds), FLOOR, "cpu")
    assert a.verdict.outcome == outcome, a.verdict.reason


def test_a_diverged_run_is_unstable_and_ratio_is_reported():
    runs = runs_for({"pre": 1e-2, "pre+qk_norm": 3e-2, "hybrid": 3e-2})
    a = STUDY.analyze(runs, FLOOR, "cpu")
    assert a.verdict.numbers["max stable LR ratio (Pre+QK-norm / Pre)"] == pytest.approx(3.0)
    bad = [
        r
        for r in runs
        if not (r.labels["variant"] == "pre+qk_norm" and r.labels["model.lr"] == 3e-2 and r.labels["seed"] == 1)
    ]
    bad.append(run(seed=1, diverged=True, final={"val/loss": 2.0}, variant="pre+qk_norm", model__lr=3e-2))
    assert STUDY.analyze(bad, FLOOR, "cpu").verdict.numbers["msl_pre_qk_norm"] == pytest.approx(1e-2)
