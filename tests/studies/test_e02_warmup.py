"""E2's verdict on synthetic runs: every outcome."""

import pytest

from normlight.studies.e02_warmup import STUDY
from tests.studies.synthetic import run

LR, W = 1e-2, 100


def grid(post_warm, post_cold, pre_warm, pre_cold, diverged_post_cold=False):
    runs = []
    for (p, w), losses in {
        ("post", W): post_warm,
        ("post", 0): post_cold,
        ("pre", W): pre_warm,
        ("pre", 0): pre_cold,
    }.items():
        for seed, loss in enumerate(losses):
            div = diverged_post_cold and (p, w) == ("post", 0)
            runs.append(
                run(
                    seed=seed,
                    diverged=div,
                    final={} if div else {"val/loss": loss},
                    model__placement=p,
                    model__warmup_steps=w,
                    model__lr=LR,
                )
            )
    return runs


@pytest.mark.parametrize(
    "cells, outcome",
    [
        (([2.0, 2.01, 2.02], [2.5, 2.6, 2.55], [2.0, 2.01, 2.02], [2.01, 2.02, 2.0]), "reproduced"),
        (
            ([2.5, 2.6, 2.55], [2.0, 2.01, 2.02], [2.0, 2.01, 2.02], [2.0, 2.01, 2.02]),
            "not reproduced",
        ),  # warm-up hurts Post
        (
            ([2.0, 2.01, 2.02], [2.5, 2.6, 2.55], [2.0, 2.01, 2.02], [2.3, 2.3, 2.3]),
            "not reproduced",
        ),  # Pre needs it too
        (([2.0, 2.3, 2.1], [2.05, 2.25, 2.15], [2.0, 2.01, 2.02], [2.0, 2.01, 2.02]), "inconclusive"),  # overlapping
        (([2.0], [2.5], [2.0], [2.0]), "inconclusive"),  # one seed decides nothing
    ],
)
def test_every_outcome(cells, outcome):
    a = STUDY.analyze(grid(*cells), {}, "cpu")
    assert a.verdict.outcome == outcome, a.verdict.reason
    assert a.verdict.rule == STUDY.rule


def test_diverged_post_without_warmup_counts_as_worst():
    a = STUDY.analyze(grid([2.0, 2.01, 2.02], [0, 0, 0], [2.0, 2.01, 2.02], [2.0, 2.01, 2.02], True), {}, "cpu")
    assert a.verdict.outcome == "reproduced" and a.verdict.numbers["post_no_warmup_diverged"] == 3


def test_partial_results_are_inconclusive_and_say_what_is_missing():
    runs = [r for r in grid([2.0] * 3, [2.5] * 3, [2.0] * 3, [2.0] * 3) if r.labels["model.placement"] == "post"]
    a = STUDY.analyze(runs, {}, "cpu")
    assert a.verdict.outcome == "inconclusive" and any("pre" in m for m in a.missing)
