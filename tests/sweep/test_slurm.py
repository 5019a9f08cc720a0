"""`normlight sweep --launcher slurm`: the sbatch script submitit generates carries the per-run resources (a stand-in
`sbatch` on PATH records it), a missing extra is one error line, and (slow) a preempted array task re-runs its
point once, with submitit's local executor (real processes)."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.cli import sweep as sweep_cli
from normlight.sweep import slurm
from normlight.tracking import sweep_runs
from tests.sweep.helpers import ROOT, reduced_sweep

SWEEPS = ROOT / "configs" / "sweeps"
SMALL = {"data.init_args.block_size": 32, "data.init_args.batch_size": 4}

FAKE_SBATCH = """#!/bin/sh
cp "$1" "{out}/submitted.sh"
echo "Submitted batch job 4242"
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _sweep_with_resources(tmp_path: Path, resources: dict) -> Path:
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml", tmp_path, grid={"model.lr": [1.0e-3, 3.0e-3]}, fixed=SMALL, name="arr"
    )
    raw = yaml.safe_load(path.read_text())
    raw["resources"] = resources
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_sbatch_script_carries_the_requested_resources(tmp_path, store, monkeypatch, capsys):
    """A real submitit SlurmExecutor submission; only the scheduler binaries are stand-ins that record the script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "sbatch", FAKE_SBATCH.format(out=tmp_path))
    _executable(bin_dir / "srun", "#!/bin/sh\nexit 0\n")
    _executable(bin_dir / "sacct", "#!/bin/sh\nexit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    resources = {"gpus_per_task": 2, "cpus_per_task": 6, "mem_gb": 32, "time_min": 90, "partition": "gpu"}
    path = _sweep_with_resources(tmp_path, {**resources, "account": "lab-a"})
    # flags override the file
    argv = ["sweep", str(path), "--tracking-uri", store, "--launcher", "slurm", "--account", "lab-b", "--workers", "3"]
    assert sweep_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted 2 array task(s) to SLURM: job 4242" in out and "--status" in out
    script = (tmp_path / "submitted.sh").read_text()
    for line in (
        "#SBATCH --array=0-1%2",  # one element per pending point, at most --workers (here all 2) at a time
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --nodes=1",
        "#SBATCH --cpus-per-task=6",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=90",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab-b",
        "#SBATCH --signal=USR2@90",  # submitit's preemption / time-out warning: the task requeues itself
    ):
        assert line in script.splitlines(), f"{line} missing from\n{script}"
    assert "srun" in script and "submitit.core._submit" in script
    # each element trains with Lightning on its GPUs
    assert slurm.fit_args(resources) == ["--trainer.accelerator", "gpu", "--trainer.devices", "2"]
    # nothing trained yet: --status shows both points pending, with the scheduler's view (sacct says nothing)
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", store, "--status"]) == 0
    status = capsys.readouterr().out
    assert status.count("pending   arr/") == 2 and "(scheduler: " in status
    assert "2 pending, 0 running, 0 finished, 0 failed" in status


def test_multi_node_resources_use_one_slurm_task_per_gpu(tmp_path):
    params = slurm.executor_parameters({"nodes": 2, "gpus_per_task": 4, "partition": "p"}, "s", None)
    assert params["nodes"] == 2 and params["tasks_per_node"] == 4 and params["gpus_per_node"] == 4
    assert slurm.fit_args({"nodes": 2, "gpus_per_task": 4})[-2:] == ["--trainer.num_nodes", "2"]


def test_missing_extra_and_bad_resources_are_one_error_line_before_any_run(tmp_path, store, monkeypatch, capsys):
    path = _sweep_with_resources(tmp_path, {})
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if `normlight[slurm]` were not installed
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", store, "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --launcher slurm needs the 'submitit' package: pip install 'normlight[slurm]'"
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", store, "--launcher", "pbs"]) == 2
    assert "--launcher must be one of local, slurm, ray" in capsys.readouterr().err
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", store, "--gpus-per-task", "0"]) == 2
    assert "gpus_per_task must be a positive number" in capsys.readouterr().err
    bad = _sweep_with_resources(tmp_path, {"gpu": 1})
    assert sweep_cli.main(["sweep", str(bad), "--tracking-uri", store]) == 2
    assert "resources: unknown key 'gpu'" in capsys.readouterr().err
    assert MlflowClient(store).get_experiment_by_name("placement-lr") is None  # nothing was created


def test_an_array_task_whose_point_has_a_live_owner_exits_without_training(tmp_path, store, capsys):
    """The array's tasks run as real processes (submitit's local executor); another driver holds a live claim
    on one point and the other point is finished, so both tasks exit without starting a training process."""
    path = _sweep_with_resources(tmp_path, {})
    s = sw.load_sweep(path)
    live, done = sw.plan(s)
    c = sweep_runs.client(store)
    exp = sweep_runs.ensure_experiment(c, s.experiment, store)
    held, _ = sweep_runs.claim(c, exp, live.name, live.tags, "other-machine:1:abc")
    finished, _ = sweep_runs.claim(c, exp, done.name, done.tags, "other-machine:1:abc")
    sweep_runs.release(c, finished, "FINISHED")
    # the driver sees the finished point and leaves it out; the live one goes to the array
    argv = ["sweep", str(path), "--tracking-uri", store, "--launcher", "slurm", "--slurm-cluster", "local"]
    assert sweep_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "1 to run" in out and "skipped: running" in out
    assert not list((tmp_path / "runs" / "sweeps" / s.name).glob("*.log"))  # no training process was started
    runs = sweep_runs.sweep_runs(c, exp, s.name)
    assert sorted((r.info.run_id, r.info.status) for r in runs) == sorted([(held, "RUNNING"), (finished, "FINISHED")])
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", store, "--status"]) == 0
    assert "0 pending, 1 running, 1 finished, 0 failed" in capsys.readouterr().out


def _task_pids(folder: Path) -> list[int]:
    """Pids of submitit task processes working in ``folder``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"submitit.core._submit" in cmd and str(folder).encode() in cmd:
                out.append(int(d.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_preempted_array_task_reruns_its_point_once(tmp_path, store, monkeypatch):
    """SIGUSR2 (SLURM's preemption / time-out warning) to a running task: its training ends KILLED, submitit
    requeues the task, the task claims the point again and finishes it: one KILLED + one FINISHED run."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml",
        tmp_path,
        grid={"model.lr": [1.0e-3]},
        fixed={**SMALL, "trainer.max_steps": 60, "trainer.val_check_interval": 20},
        name="preempt",
    )
    s = sw.load_sweep(path)
    log_dir = tmp_path / "runs" / "sweeps" / s.name
    (run,) = sw.plan(s)
    task = slurm.SlurmPointTask(str(path), run.hash, store, str(log_dir))
    ex = slurm.make_executor(log_dir / "submitit", {}, s.name, cluster="local")
    c = sweep_runs.client(store)
    sweep_runs.ensure_experiment(c, s.experiment, store)
    job = ex.submit(task)
    exp = c.get_experiment_by_name(s.experiment).experiment_id
    deadline = time.time() + 600
    while True:  # wait until the point trains
        time.sleep(0.5)
        assert time.time() < deadline and not job.done(), job.stderr()
        runs = sweep_runs.sweep_runs(c, exp, s.name)
        if runs and len(c.get_metric_history(runs[0].info.run_id, "train/loss")) >= 3:
            break
    (pid,) = _task_pids(log_dir / "submitit")
    os.kill(pid, signal.SIGUSR2)
    assert job.result() == "finished"
    statuses = sorted(r.info.status for r in sweep_runs.sweep_runs(c, exp, s.name))
    assert statuses == ["FINISHED", "KILLED"]
    assert "this job is preempted" in job.stderr()
