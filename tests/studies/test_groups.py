"""The slicing helpers of the 18b studies: failed runs scored as given, tail means, the combination rule."""

from __future__ import annotations

import math

from normlight.studies.groups import combine, layer_tail_means, metric_values, pick, tail_mean
from tests.studies.fake_runs import run


def test_failed_diverged_and_nonfinite_runs_take_the_failed_score():
    rs = [
        run("s", {"a": 1}, {"val/loss": 2.0}),
        run("s", {"a": 1}, {"val/loss": 1.0}, diverged=True),
        run("s", {"a": 2}, {"val/loss": float("nan")}),
        run("s", {"a": 2}, {}, status="FAILED"),
    ]
    assert metric_values(rs, "val/loss", 9.0) == [2.0, 9.0, 9.0, 9.0]
    assert pick(rs, a=2) == rs[2:] and pick(rs, a="1") == rs[:2]


def test_tail_mean_averages_the_second_half_of_the_logged_steps():
    r = run("s", {}, {}, {"m": [(0, 10.0), (100, 8.0), (200, 2.0), (300, 4.0), (400, float("inf"))]})
    assert math.isclose(tail_mean(r, "m"), (2.0 + 4.0) / 2)  # steps 0..300 finite: the tail is >= 150
    assert tail_mean(r, "missing") is None
    layers = run("s", {}, {}, {"d/l01": [(0, 1.0), (10, 3.0)], "d/l00": [(0, 5.0)], "d/lx": [(0, 7.0)]})
    assert layer_tail_means(layers, "d") == [5.0, 3.0]


def test_combine():
    assert combine({"a": "reproduced", "b": "reproduced"}) == "reproduced"
    assert combine({"a": "reproduced", "b": "inconclusive"}) == "inconclusive"
    assert combine({"a": "inconclusive", "b": "not reproduced"}) == "not reproduced"
    assert combine({}) == "inconclusive"
