"""At smoke scale a study runs only a corner of its grid: analyze() must not report the unplanned arms as missing
(the report's "Missing" section means planned points without a run), and still return an outcome."""

from __future__ import annotations

import itertools

import pytest

from normlight.studies import OUTCOMES, get_study
from tests.studies.fake_runs import flat, run

STUDIES = ["e5_bn_in_lm", "e6_fixup_nf", "e7_microbatch", "e9_normfree_gpt", "e19_prepbn", "dyt_vs_ln"]
METRICS = {"val/loss": 3.0, "val/acc1": 0.3, "diag/bstat_fluct_mean": 0.5, "diag/attn_entropy/l00": 0.9}


def planned_runs(study, scale: str) -> list:
    out = []
    for spec in study.sweeps(scale, 1):
        axes = list(spec["grid"].items())
        for combo in itertools.product(*(values for _, values in axes)):
            labels = {k: (v["label"] if isinstance(v, dict) else v) for (k, _), v in zip(axes, combo)}
            hist = {k: flat(v) for k, v in METRICS.items()}
            out.append(
                run(spec["name"], labels, dict(METRICS), hist, overrides={"data": spec["fixed"].get("data", {})})
            )
    return out


@pytest.mark.parametrize("name", STUDIES)
def test_smoke_plan_is_complete(name):
    study = get_study(name)
    extra = study.measure("smoke", 1, []) if name in ("e6_fixup_nf", "e19_prepbn") else {}
    a = study.analyze(planned_runs(study, "smoke"), extra, "smoke")
    assert a.missing == [] and a.verdict.outcome in OUTCOMES
    assert study.estimated_cpu_minutes("cpu") > 0 and study.rule and study.claim and study.paper
