"""E1's verdict on synthetic numbers (every outcome), and the conversion measurement itself on a tiny model."""

import pytest

from normlight.studies.e01_rmsnorm_equivalence import STUDY, conversion_and_timing
from tests.studies.synthetic import run

EXACT = {"max_abs_dlogits_rmsnorm": 2e-6, "max_abs_dlogits_crmsnorm": 3e-6, "max_abs_logit": 12.0}


def runs_for(ln, rms):
    return [
        run(seed=s, final={"val/loss": x}, model__norm=n)
        for n, xs in (("layernorm", ln), ("rmsnorm", rms))
        for s, x in enumerate(xs)
    ]


@pytest.mark.parametrize(
    "extra, ln, rms, outcome",
    [
        (EXACT, [2.0, 2.01, 2.02], [2.01, 2.0, 2.02], "reproduced"),
        ({**EXACT, "max_abs_dlogits_crmsnorm": 0.5}, [2.0, 2.01], [2.0, 2.01], "not reproduced"),  # not exact
        (EXACT, [2.0, 2.01, 2.02], [2.2, 2.21, 2.22], "not reproduced"),  # RMSNorm clearly worse
        (EXACT, [2.0, 2.2, 2.1], [2.1, 2.3, 2.15], "inconclusive"),  # worse by > tolerance, seeds overlap
        ({}, [2.0, 2.01], [2.0, 2.01], "inconclusive"),  # conversion not measured
    ],
)
def test_every_outcome(extra, ln, rms, outcome):
    a = STUDY.analyze(runs_for(ln, rms), extra, "cpu")
    assert a.verdict.outcome == outcome, a.verdict.reason


def test_conversion_of_a_trained_model_is_exact(one_thread):
    m = conversion_and_timing(depth=2, steps=3, reps=1)
    assert m["max_abs_dlogits_rmsnorm"] < 1e-4 * max(1.0, m["max_abs_logit"])
    assert m["max_abs_dlogits_crmsnorm"] < 1e-4 * max(1.0, m["max_abs_logit"])
    assert m["step_ms_layernorm"] > 0 and m["step_ms_rmsnorm"] > 0
