"""The package's own study: discovered by name, every verdict outcome on synthetic runs, a sweep normlight accepts."""

import pytest

from normlight.studies import RunRecord, get_study


def _runs(ln, bn):
    out = []
    for norm, xs in (("layernorm", ln), ("biasnorm", bn)):
        for seed, x in enumerate(xs):
            labels = {"model.norm": norm, "seed_everything": seed, "seed": seed}
            out.append(RunRecord(f"{norm}{seed}", "norms", labels, labels, "FINISHED", False, {"val/loss": x}, {}, {}))
    return out


@pytest.mark.parametrize(
    "ln, bn, outcome",
    [
        ([2.0, 2.01, 2.02], [2.0, 2.02, 2.03], "reproduced"),
        ([2.0, 2.01, 2.02], [2.3, 2.31, 2.32], "not reproduced"),
        ([2.0, 2.3, 2.1], [2.2, 2.35, 2.15], "inconclusive"),
        ([2.0], [2.0], "inconclusive"),
    ],
)
def test_verdict_every_outcome(ln, bn, outcome):
    study = get_study("biasnorm_vs_layernorm")  # through the entry point, as normlight finds it
    assert study.analyze(_runs(ln, bn), {}, "cpu").verdict.outcome == outcome


def test_sweeps_use_a_base_config_that_exists():
    from pathlib import Path

    (spec,) = get_study("biasnorm_vs_layernorm").sweeps("cpu", 3)
    assert Path(spec["base"]).is_file() and spec["grid"]["model.norm"] == ["layernorm", "biasnorm"]
