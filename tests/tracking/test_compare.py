"""Pure parts of `normlight compare`: maximum stable LR and field lookup."""

from types import SimpleNamespace

import pytest

from normlight.tracking import compare


def test_max_stable_lr_rules():
    nan = float("nan")
    pts = [
        (1e-3, False, 2.0),
        (1e-3, False, 2.2),
        (1e-2, False, 2.05),
        (1e-2, False, 2.05),
        (3e-2, False, 2.5),
        (1e-1, True, nan),
    ]
    assert compare.max_stable_lr(pts) == 1e-2  # 3e-2 is 19% worse than the best mean (2.05 at 1e-2)
    assert compare.max_stable_lr(pts, tolerance=0.3) == 3e-2
    pts.append((3e-2, True, nan))  # one diverged seed makes an LR unstable whatever the others did
    assert compare.max_stable_lr(pts, tolerance=0.3) == 1e-2
    acc = [(0.01, False, 0.9), (0.1, False, 0.85), (1.0, False, 0.5)]
    assert compare.max_stable_lr(acc, maximize=True) == 0.1
    assert compare.max_stable_lr([(0.1, True, nan)]) is None


def test_field_value_lookup_order():
    run = SimpleNamespace(
        data=SimpleNamespace(
            tags={"norm": "rmsnorm", "cfg.model.lr": "0.01", "norm_setup": "gn+ws"},
            params={"model.lr": "0.003", "data.batch_size": "8", "seed_everything": "1"},
        )
    )
    assert compare.field_value(run, "norm") == "rmsnorm"  # a tag
    assert compare.field_value(run, "seed_everything") == "1"  # a param
    assert compare.field_value(run, "lr") == "0.003"  # dotted param beats the cfg. tag
    assert compare.field_value(run, "batch_size") == "8"
    assert compare.field_value(run, "norm_setup") == "gn+ws"
    assert compare.field_value(run, "missing") is None


# ---------------------------------------------------------------- summarize: mean, std and diverged runs


@pytest.fixture(scope="module")
def seeded_runs():
    """FINISHED MLflow runs (real ``mlflow.entities.Run`` records, as ``load_runs`` returns them): layernorm with
    val/loss 1, 2, 3 over three seeds; rmsnorm with one finished seed (5.0) and one seed that diverged but
    still logged a finite last val/loss (0.5)."""
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

    rows = [("layernorm", 1, 1.0, "false"), ("layernorm", 2, 2.0, "false"), ("layernorm", 3, 3.0, "false")]
    rows += [("rmsnorm", 1, 5.0, "false"), ("rmsnorm", 2, 0.5, "true")]
    runs = []
    for i, (norm, seed, loss, diverged) in enumerate(rows):
        info = RunInfo(f"run{i}", "1", "", "FINISHED", 0, 1, "active", run_name=f"{norm}-{seed}")
        data = RunData(
            metrics=[Metric("val/loss", loss, 1, 10)],
            params=[Param("seed_everything", str(seed))],
            tags=[RunTag("norm", norm), RunTag("diverged", diverged)],
        )
        runs.append(Run(info, data))
    return runs


def _record(records, norm):
    (rec,) = [r for r in records if r["group"]["norm"] == norm]
    return rec


def test_std_over_seeds_is_the_sample_std(seeded_runs):
    _, _, records = compare.summarize(seeded_runs, ["norm"], "val/loss")
    rec = _record(records, "layernorm")
    assert rec["final_mean"] == pytest.approx(2.0)
    assert rec["final_std"] == pytest.approx(1.0)  # n - 1 in the denominator; the population std is 0.816
    assert rec["diverged"] == 0


def test_diverged_runs_are_counted_but_not_averaged(seeded_runs):
    _, _, records = compare.summarize(seeded_runs, ["norm"], "val/loss")
    rec = _record(records, "rmsnorm")
    assert rec["final_mean"] == pytest.approx(5.0)  # the diverged seed's finite 0.5 is left out
    assert rec["final_std"] == 0.0  # one value behind the mean
    assert rec["diverged"] == 1 and rec["n"] == 2
