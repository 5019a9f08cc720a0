"""A team setup for real: PostgreSQL (from the installed binaries) behind `normlight server` with an artifact root;
two sweep drivers on one sweep, one SIGKILLed mid-run, then a resume: every grid point has exactly one FINISHED run,
with its metrics and its config artifact."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.cli import sweep as sweep_cli
from normlight.tracking import sweep_runs
from tests.cli.test_server import needs_postgres, postgres, start_server, stop_server  # noqa: F401 - fixture
from tests.sweep.helpers import ROOT, reduced_sweep


@pytest.mark.slow
@needs_postgres
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_two_drivers_on_postgresql_one_killed_then_resumed(postgres, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    base, server = start_server(postgres.create_database("mlflow"), tmp_path / "artifacts", tmp_path)
    try:
        path = reduced_sweep(
            ROOT / "configs" / "sweeps" / "placement_lr.yaml",
            tmp_path,
            grid={"model.lr": [1.0e-3, 2.0e-3]},
            fixed={"data.init_args.block_size": 32, "data.init_args.batch_size": 4, "trainer.max_steps": 24},
            name="team",
        )
        s = sw.load_sweep(path)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        cmd = [sys.executable, "-m", "normlight", "sweep", str(path), "--tracking-uri", base]
        logs = [open(tmp_path / f"driver{i}.log", "w") for i in range(2)]
        drivers = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT) for f in logs]
        c = MlflowClient(base)
        victim = drivers[0]
        deadline = time.time() + 900
        while True:  # wait until driver 0 trains a point, then SIGKILL it mid-run
            time.sleep(0.5)
            assert time.time() < deadline and victim.poll() is None, (tmp_path / "driver0.log").read_text()
            exp = c.get_experiment_by_name(s.experiment)
            mine = [
                r
                for r in (sweep_runs.sweep_runs(c, exp.experiment_id, s.name) if exp else [])
                if r.data.tags.get(sweep_runs.OWNER_TAG, "").split(":")[1:2] == [str(victim.pid)]
                and r.info.status == "RUNNING"
            ]
            if mine and len(c.get_metric_history(mine[0].info.run_id, "train/loss")) >= 3:
                break
        victim.kill()
        victim.wait()
        assert drivers[1].wait(timeout=900) == 0, (tmp_path / "driver1.log").read_text()
        # resume: whatever driver 0 left unfinished is trained now
        assert sweep_cli.main(["sweep", str(path), "--tracking-uri", base]) == 0
        time.sleep(3)  # an orphaned training process would still finish its run about now
        runs = sweep_runs.sweep_runs(c, exp.experiment_id, s.name)
        finished = [r for r in runs if r.info.status == "FINISHED"]
        assert sorted(r.data.tags["sweep_hash"] for r in finished) == sorted(r.hash for r in sw.plan(s))
        assert "KILLED" in {r.info.status for r in runs}  # driver 0's point, re-run once
        for r in finished:
            assert len(c.get_metric_history(r.info.run_id, "train/loss")) >= 20
            assert "config.yaml" in {a.path for a in c.list_artifacts(r.info.run_id)}
    finally:
        out = stop_server(server)
    assert "normlight server: stopped" in out
