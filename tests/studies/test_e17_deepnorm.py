"""E17's verdict on synthetic runs: every outcome."""

import pytest

from normlight.studies.e17_deepnorm import STUDY
from tests.studies.synthetic import run

FLOOR = {"unigram_nats": 3.0}


def runs_for(losses):
    """placement -> per-seed final val loss (None = diverged)."""
    return [
        run(seed=s, diverged=x is None, final={} if x is None else {"val/loss": x}, model__placement=p)
        for p, xs in losses.items()
        for s, x in enumerate(xs)
    ]


@pytest.mark.parametrize(
    "losses, outcome",
    [
        ({"post": [None, None], "pre": [2.0, 2.0], "deepnorm": [2.1, 2.2], "subln": [2.0, 2.1]}, "reproduced"),
        ({"post": [2.6, 2.7], "pre": [2.0, 2.0], "deepnorm": [2.1, 2.2], "subln": [2.0, 2.1]}, "reproduced"),
        ({"post": [None, 2.0], "pre": [2.0, 2.0], "deepnorm": [3.2, 2.2], "subln": [2.0, 2.1]}, "not reproduced"),
        ({"post": [2.0, 2.01], "pre": [2.0, 2.0], "deepnorm": [2.3, 2.35], "subln": [2.0, 2.1]}, "not reproduced"),
        ({"post": [2.1, 2.3], "pre": [2.0, 2.0], "deepnorm": [2.2, 2.25], "subln": [2.0, 2.1]}, "inconclusive"),
        ({"post": [None], "pre": [2.0], "deepnorm": [2.1], "subln": [2.0]}, "inconclusive"),
    ],
)
def test_every_outcome(losses, outcome):
    a = STUDY.analyze(runs_for(losses), FLOOR, "cpu")
    assert a.verdict.outcome == outcome, a.verdict.reason
