"""E4's verdict on synthetic runs: every outcome."""

import pytest

from normlight.studies.e04_grad_profiles import PLACEMENTS, STUDY
from tests.studies.synthetic import run

GOOD = {
    "post": ([0.3, 0.35, 0.32], [1.0, 1.1, 1.05]),
    "pre": ([3.0, 3.2, 3.1], [0.9, 0.95, 0.92]),
    "mix": ([1.2, 1.1, 1.3], [0.3, 0.32, 0.31]),
    "peri": ([1.0, 1.1, 1.05], [0.2, 0.22, 0.21]),
    "normformer": ([1.5, 1.4, 1.6], [0.4, 0.42, 0.41]),
}


def runs_for(cells):
    out = []
    for p in PLACEMENTS:
        ratios, cvs = cells[p]
        for seed, (r, c) in enumerate(zip(ratios, cvs)):
            hist = {"diag/grad_norm_first_last": [(10, r), (20, r)], "diag/grad_norm_cv": [(10, c), (20, c)]}
            hist |= {f"diag/grad_norm/l{i:02d}": [(10, 1.0 + i)] for i in range(4)}
            out.append(run(seed=seed, history=hist, final={"val/loss": 2.0}, model__placement=p))
    return out


@pytest.mark.parametrize(
    "change, outcome",
    [
        ({}, "reproduced"),
        ({"pre": ([0.5, 0.6, 0.55], [0.9, 0.95, 0.92])}, "not reproduced"),  # Pre-LN not larger early
        ({"post": ([2.0, 2.1, 2.2], [1.0, 1.1, 1.05])}, "not reproduced"),  # Post-LN not vanishing early
        ({"peri": ([1.0, 1.1, 1.05], [2.0, 2.2, 2.1])}, "not reproduced"),  # Peri less uniform than Pre
        ({"mix": ([1.2, 1.1, 1.3], [0.5, 1.2, 1.0])}, "inconclusive"),  # Mix CV overlaps Pre's
        ({p: ([v[0][0]], [v[1][0]]) for p, v in GOOD.items()}, "inconclusive"),  # one seed
    ],
)
def test_every_outcome(change, outcome):
    a = STUDY.analyze(runs_for(GOOD | change), {}, "cpu")
    assert a.verdict.outcome == outcome, a.verdict.reason
