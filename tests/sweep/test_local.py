"""Real sweeps: `normlight fit` subprocesses into one sqlite MLflow store, three concurrent drivers, interrupted and
resumed, a diverging run recorded (not crashed), then `normlight compare` on the same store."""

import math

from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.cli import compare
from normlight.cli import sweep as sweep_cli
from normlight.tracking import sweep_runs
from tests.sweep.helpers import ROOT, reduced_sweep

SWEEPS = ROOT / "configs" / "sweeps"


def finished_by_hash(client, exp_name, sweep_name):
    exp = client.get_experiment_by_name(exp_name)
    runs = sweep_runs.sweep_runs(client, exp.experiment_id, sweep_name)
    out = {}
    for r in runs:
        if r.info.status == "FINISHED":
            out.setdefault(r.data.tags["sweep_hash"], []).append(r)
    return runs, out


def test_sweep_two_workers_interrupt_resume_diverge_and_compare(tmp_path, store, capsys):
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml",
        tmp_path,
        grid={"model.placement": ["pre"], "model.lr": [1.0e-3, 3.0e-3, 1.0e30]},  # 1e30: a certain divergence
        fixed={"data.init_args.block_size": 32, "data.init_args.batch_size": 4},
    )
    s = sw.load_sweep(path)
    plan = sw.plan(s)
    client = MlflowClient(store)

    # 1) a partial sweep: only the first run
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", store, "--max-runs", "1"]) == 0
    runs, done = finished_by_hash(client, s.experiment, s.name)
    assert len(runs) == 1 and set(done) == {plan[0].hash}

    # 2) a killed sweep left a RUNNING record for the second point
    exp_id = client.get_experiment_by_name(s.experiment).experiment_id
    stale = sweep_runs.create_run(client, exp_id, plan[1].name, plan[1].tags)

    # 3) resume with THREE drivers at once (as three terminals would): the finished run is skipped, the other
    #    two run at the same time, each exactly once (each driver claims a point before training it)
    import threading

    codes = []
    drivers = [
        threading.Thread(target=lambda: codes.append(sweep_cli.main(["sweep", str(path), "--tracking-uri", store])))
        for _ in range(3)
    ]
    for t in drivers:
        t.start()
    for t in drivers:
        t.join()
    assert codes == [0, 0, 0]
    out = capsys.readouterr().out
    assert "1 finished (skipped)" in out and "2 to run" in out
    runs, done = finished_by_hash(client, s.experiment, s.name)
    assert set(done) == {r.hash for r in plan} and all(len(v) == 1 for v in done.values())
    assert len(runs) == 4 and client.get_run(stale).info.status == "KILLED"
    spans = sorted((done[r.hash][0].info.start_time, done[r.hash][0].info.end_time) for r in plan[1:])
    assert spans[1][0] < spans[0][1], "the two drivers did not run at the same time"

    # the 1e30 run diverged, was recorded as such, and its process still exited 0 (status FINISHED)
    for r in plan:
        run = done[r.hash][0]
        diverged = r.overrides["model.lr"] > 1
        assert (run.data.tags.get("diverged") == "true") == diverged, run.data.tags
        assert run.data.metrics["summary/diverged"] == float(diverged)
        if diverged:
            assert "diverged_step" in run.data.tags and "summary/diverged_step" in run.data.metrics
        else:
            assert math.isfinite(run.data.metrics["val/loss"]) and "diag/grad_norm" in run.data.metrics
        assert run.data.tags["sweep"] == s.name and run.data.tags["placement"] == "pre"

    # 4) a third invocation has nothing to do and creates nothing
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", store]) == 0
    assert "0 to run" in capsys.readouterr().out
    assert len(finished_by_hash(client, s.experiment, s.name)[0]) == 4

    # 5) compare reads the same store: table, plots, max stable LR, outputs logged to MLflow
    outdir = tmp_path / "cmp"
    assert compare.main(["compare", "--experiment", s.experiment, "--tracking-uri", store, "--out", str(outdir)]) == 0
    printed = capsys.readouterr().out
    lines = (outdir / "comparison.csv").read_text().splitlines()
    assert lines[0].startswith("placement,lr,runs,diverged,final val/loss mean,final val/loss std,final val/loss n")
    assert len(lines) == 4
    assert lines[3].startswith("pre,1e+30,1,1,,,0,")  # diverged: no final metric in the mean (n = 0)
    for name in ("comparison.md", "curves.png", "profiles.png", "lr_sensitivity.png"):
        assert (outdir / name).stat().st_size > 100, name
    assert "max stable LR  pre: 0.003" in printed
    # the comparison run lives in its own experiment, out of the training runs table
    assert not client.search_runs([exp_id], filter_string="tags.`normlight.compare` = 'true'")
    cmp_exp = client.get_experiment_by_name(f"{s.experiment}/compare")
    (cmp_run,) = client.search_runs([cmp_exp.experiment_id])
    assert {f.path for f in client.list_artifacts(cmp_run.info.run_id, "compare")} >= {
        "compare/comparison.csv",
        "compare/curves.png",
        "compare/lr_sensitivity.png",
        "compare/profiles.png",
    }
    # the sweep is one parent run (closed) with every grid point as its child; the runs carry the max stable LR
    (parent,) = client.search_runs([exp_id], filter_string="tags.`normlight.parent` = 'true'")
    assert parent.info.run_name == f"sweep/{s.name}" and parent.info.status == "FINISHED"
    runs, done = finished_by_hash(client, s.experiment, s.name)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for rs in done.values() for r in rs)
    assert {r.data.tags["max_stable_lr"] for rs in done.values() for r in rs} == {"3e-3"}


def test_shipped_vision_sweeps_reduced_grids_run(tmp_path, store):
    """One tiny real run each of vit_norms (a batch-statistic norm) and resnet_microbatch (NF at batch 2),
    as two sweeps running at the same time against the same sqlite store."""
    import threading

    import yaml

    setups = yaml.safe_load((SWEEPS / "resnet_microbatch.yaml").read_text())["grid"]["norm_setup"]
    cases = [
        (
            reduced_sweep(SWEEPS / "vit_norms.yaml", tmp_path, grid={"model.norm": ["batchnorm"]}),
            "diag/bstat_fluct_mean",
        ),
        (
            reduced_sweep(
                SWEEPS / "resnet_microbatch.yaml",
                tmp_path,
                grid={"norm_setup": [b for b in setups if b["label"] == "nf"], "data.init_args.batch_size": [2]},
            ),
            "val/acc1",
        ),
    ]
    codes = {}
    threads = [
        threading.Thread(
            target=lambda p=p: codes.__setitem__(p, sweep_cli.main(["sweep", str(p), "--tracking-uri", store]))
        )
        for p, _ in cases
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(codes.values()) == [0, 0]
    for path, metric in cases:
        s = sw.load_sweep(path)
        runs, done = finished_by_hash(MlflowClient(store), s.experiment, s.name)
        assert len(runs) == len(done) == 1
        run = next(iter(done.values()))[0]
        assert metric in run.data.metrics and run.data.tags["diverged"] == "false"
