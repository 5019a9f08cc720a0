"""`normlight sweep --launcher ray` on a local Ray instance with 2 CPUs (one per test module), and exactly-once
across launchers: a local driver, a SLURM array (submitit's local executor) and a Ray task set started at once on
one sweep leave each grid point exactly one FINISHED run."""

from __future__ import annotations

import threading

import pytest
from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.cli import sweep as sweep_cli
from normlight.tracking import sweep_runs
from tests.sweep.helpers import ROOT, reduced_sweep

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'normlight[ray]')")
SWEEPS = ROOT / "configs" / "sweeps"
SMALL = {"data.init_args.block_size": 32, "data.init_args.batch_size": 4}


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance with 2 CPUs for the module (starting one costs seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _runs(store, s):
    c = MlflowClient(store)
    return sweep_runs.sweep_runs(c, c.get_experiment_by_name(s.experiment).experiment_id, s.name)


@pytest.mark.slow
def test_three_task_sets_on_one_sweep_run_each_point_once(tmp_path, store, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml", tmp_path, grid={"model.lr": [1.0e-3, 2.0e-3, 3.0e-3]}, fixed=SMALL, name="three"
    )
    s = sw.load_sweep(path)
    base = ["sweep", str(path), "--tracking-uri", store]
    launchers = [
        [*base, "--workers", "2"],  # local driver
        [*base, "--launcher", "slurm", "--slurm-cluster", "local"],  # a job array, one element per point
        [*base, "--launcher", "ray", "--workers", "2"],  # Ray tasks
    ]
    codes = {}
    threads = [
        threading.Thread(target=lambda i=i, a=a: codes.__setitem__(i, sweep_cli.main(a)))
        for i, a in enumerate(launchers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    printed = capsys.readouterr().out
    assert codes == {0: 0, 1: 0, 2: 0}, printed
    runs = _runs(store, s)
    # exactly one run per point, FINISHED (losing claims are deleted, so nothing else is recorded)
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3, printed
    assert sorted(r.data.tags["sweep_hash"] for r in runs) == sorted(r.hash for r in sw.plan(s))
    assert all("train/loss" in r.data.metrics for r in runs)
    # the other task sets saw the points taken (finished or running elsewhere) and trained nothing
    assert printed.count("finished three/") + printed.count("finished  three/") >= 3
    assert "skipped: running" in printed or "skipped: finished" in printed or "skip" in printed
    assert sweep_cli.main([*base, "--status"]) == 0
    assert "0 pending, 0 running, 3 finished, 0 failed" in capsys.readouterr().out


def test_ray_tasks_skip_a_live_point_and_retry_a_failed_one(tmp_path, store, monkeypatch, capsys):
    """Point A is held by a live owner elsewhere: its Ray task exits without training. Point B FAILED earlier: it is
    kept until --retry-failed, then trained by a Ray task (2 CPUs, one task each)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml", tmp_path, grid={"model.lr": [1.0e-3, 3.0e-3]}, fixed=SMALL, name="rt"
    )
    s = sw.load_sweep(path)
    live, failed = sw.plan(s)
    c = sweep_runs.client(store)
    exp = sweep_runs.ensure_experiment(c, s.experiment, store)
    held, _ = sweep_runs.claim(c, exp, live.name, live.tags, "other-machine:1:abc")
    old, _ = sweep_runs.claim(c, exp, failed.name, failed.tags, "other-machine:1:abc")
    sweep_runs.release(c, old, "FAILED")
    base = ["sweep", str(path), "--tracking-uri", store, "--launcher", "ray", "--workers", "2"]
    assert sweep_cli.main(base) == 1  # the failed point is kept
    out = capsys.readouterr().out
    assert "1 failed (kept; --retry-failed re-runs them), 1 to run" in out and "skipped: running" in out
    assert sweep_cli.main([*base, "--retry-failed"]) == 0
    out = capsys.readouterr().out
    assert "finished rt/lr=0.003 (ray task)" in out.replace("  ", " ") and "skipped: running" in out
    by_status = sorted((r.info.status, r.data.tags["sweep_hash"]) for r in _runs(store, s))
    assert by_status == sorted([("RUNNING", live.hash), ("FAILED", failed.hash), ("FINISHED", failed.hash)])
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", store, "--status"]) == 0
    assert "0 pending, 1 running, 1 finished, 0 failed" in capsys.readouterr().out
