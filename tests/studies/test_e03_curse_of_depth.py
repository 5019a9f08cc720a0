"""E3's verdict on synthetic runs: every outcome."""

import pytest

from normlight.studies.e03_curse_of_depth import STUDY
from tests.studies.synthetic import per_layer_final, run


def runs_for(pre_slopes, lns_slopes, pre_bi, lns_bi):
    out = []
    for p, slopes, bi in (("pre", pre_slopes, pre_bi), ("lns", lns_slopes, lns_bi)):
        for seed, (s, b) in enumerate(zip(slopes, bi)):
            final = {"diag/resid_growth_slope": s, "val/loss": 2.0}
            final |= per_layer_final("diag/block_influence", [0.5, 0.4, b, b])  # deep half = b
            final |= per_layer_final("diag/resid_rms", [1, 2, 4, 8])
            out.append(run(seed=seed, final=final, model__placement=p))
    return out


@pytest.mark.parametrize(
    "args, outcome",
    [
        (([0.3, 0.32, 0.31], [0.05, 0.06, 0.04], [0.01, 0.012, 0.011], [0.05, 0.06, 0.055]), "reproduced"),
        (([-0.1, -0.12, -0.11], [0.05, 0.06, 0.04], [0.01, 0.012, 0.011], [0.05, 0.06, 0.055]), "not reproduced"),
        (
            ([0.3, 0.32, 0.31], [0.5, 0.6, 0.55], [0.01, 0.012, 0.011], [0.05, 0.06, 0.055]),
            "not reproduced",
        ),  # LNS grows more
        (
            ([0.3, 0.32, 0.31], [0.05, 0.06, 0.04], [0.05, 0.06, 0.055], [0.01, 0.012, 0.011]),
            "not reproduced",
        ),  # deep LNS idler
        (
            ([0.3, 0.1, 0.2], [0.25, 0.15, 0.12], [0.01, 0.012, 0.011], [0.05, 0.06, 0.055]),
            "inconclusive",
        ),  # slopes overlap
        (([0.3], [0.05], [0.01], [0.05]), "inconclusive"),
    ],
)
def test_every_outcome(args, outcome):
    a = STUDY.analyze(runs_for(*args), {}, "cpu")
    assert a.verdict.outcome == outcome, a.verdict.reason


def test_deep_half_is_the_deeper_blocks():
    a = STUDY.analyze(runs_for([0.3] * 3, [0.05] * 3, [0.011, 0.01, 0.012], [0.05, 0.06, 0.055]), {}, "cpu")
    assert a.verdict.numbers["pre_deep_influence"] == pytest.approx(0.011)
