"""Sweep drivers as real processes: training processes die with their driver (even after SIGKILL), a point that is
RUNNING under a live driver is never started twice, and N `normlight sweep` processes run each point once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.tracking import sweep_runs
from tests.helpers import ROOT
from tests.sweep.helpers import reduced_sweep

SWEEPS = ROOT / "configs" / "sweeps"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    return not _alive(pid)


PARENT = """
import sys, time
from normlight.sweep.local import spawn
child = spawn([sys.executable, "-c", "import time\\nwhile True: time.sleep(0.1)"])
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_training_process_dies_with_its_driver_even_after_sigkill():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()  # SIGKILL: no handler of the driver runs
        parent.wait()
        assert _wait_dead(child, 30), "the child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def _children_of_run(run_id: str) -> list[int]:
    """Pids of processes whose command line names ``run_id`` (the training process of a sweep point)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if run_id.encode() in (d / "cmdline").read_bytes() and _alive(int(d.name)):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_sigkilled_driver_second_driver_and_rerun_give_one_finished_run(tmp_path, store):
    """Driver A trains a point; driver B started meanwhile skips it (live claim); SIGKILL of A ends the training
    (run KILLED, last.ckpt); driver C re-runs the point; nothing else ever finishes it."""
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml",
        tmp_path,
        grid={"model.placement": ["pre"], "model.lr": [1.0e-3]},
        fixed={"data.init_args.block_size": 32, "data.init_args.batch_size": 4, "trainer.max_steps": 40},
        name="killme",
    )
    s = sw.load_sweep(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "normlight", "sweep", str(path), "--tracking-uri", store]
    a = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=open(tmp_path / "a.log", "w"), stderr=subprocess.STDOUT)
    client = MlflowClient(store)
    deadline = time.time() + 600
    while True:
        time.sleep(0.5)
        assert a.poll() is None and time.time() < deadline, (tmp_path / "a.log").read_text()
        try:
            (run,) = sweep_runs.sweep_runs(client, client.get_experiment_by_name(s.experiment).experiment_id, s.name)
        except (ValueError, AttributeError):
            continue
        if len(client.get_metric_history(run.info.run_id, "train/loss")) >= 3:
            break
    b = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert b.returncode == 0 and "running" in b.stdout, b.stdout + b.stderr
    (child,) = _children_of_run(run.info.run_id)
    a.kill()
    a.wait()
    assert _wait_dead(child, 120), "the training process outlived its SIGKILLed driver"
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    c = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert c.returncode == 0, c.stdout + c.stderr
    time.sleep(5)  # an orphan would finish later
    exp = client.get_experiment_by_name(s.experiment).experiment_id
    statuses = sorted(r.info.status for r in sweep_runs.sweep_runs(client, exp, s.name))
    assert statuses == ["FINISHED", "KILLED"]


@pytest.mark.slow
def test_three_sweep_processes_run_each_point_once(tmp_path, store):
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml",
        tmp_path,
        grid={"model.placement": ["pre"], "model.lr": [1.0e-3, 3.0e-3]},
        fixed={"data.init_args.block_size": 32, "data.init_args.batch_size": 4},
        name="three",
    )
    s = sw.load_sweep(path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "normlight", "sweep", str(path), "--tracking-uri", store]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    client = MlflowClient(store)
    runs = sweep_runs.sweep_runs(client, client.get_experiment_by_name(s.experiment).experiment_id, s.name)
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert sorted(r.data.tags["sweep_hash"] for r in runs) == sorted(r.hash for r in sw.plan(s))
