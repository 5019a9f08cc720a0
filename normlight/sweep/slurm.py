"""``normlight sweep FILE --launcher slurm``: the pending grid points as one SLURM job array, through submitit.

Each array element runs one :class:`SlurmPointTask` (a :class:`~normlight.sweep.task.PointTask`: claim the point
in the tracking store, train it with ``normlight fit``, release it), so several arrays, local drivers and Ray
tasks may work on the same sweep and each point is still trained once. On preemption or time-out SLURM sends
USR2 (submitit's ``--signal``); submitit then calls :meth:`SlurmPointTask.checkpoint`, which stops the training
(``last.ckpt`` written, run KILLED) and requeues the task, which claims the KILLED point again and re-runs it.

Resources are per run (one array element): ``nodes``, ``gpus_per_task``, ``cpus_per_task``, ``mem_gb``,
``time_min``, ``partition``, ``account`` from the sweep file's ``resources:`` or the command line. A task with
G GPUs on one node is one SLURM task; its ``normlight fit`` gets ``--trainer.devices G`` and Lightning starts
the G data-parallel processes itself. On ``nodes: N > 1`` the element has G tasks per node (one per GPU) and
Lightning's SLURM environment wires the N x G ranks: rank 0 claims the point and hands the run id to the other
ranks through a file in the log folder (which must be on a shared file system, as submitit's folder is anyway).

Where ``srun`` is missing, submitit's local executor runs the array on this machine as real processes (what the
tests use). submitit stores each task as a pickle in the log folder, written by this driver and read by the
task: keep that folder private to you, as for any submitit job.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from normlight.sweep.extras import require
from normlight.sweep.spec import Run, Sweep, SweepError
from normlight.sweep.task import PointTask

JOBS_FILE = "slurm-jobs.json"  # which array element runs which point (read by --status)


class SlurmPointTask(PointTask):
    """A :class:`PointTask` that submitit requeues on preemption (it has a ``checkpoint`` method)."""

    def __call__(self) -> str:
        """Run the point; under a multi-task SLURM element, ranks > 0 join rank 0's run (see the module doc)."""
        ranks = int(os.environ.get("SLURM_NTASKS", "1")) if shutil.which("srun") else 1
        if ranks > 1:
            return self._multi_task()
        return super().__call__()

    def checkpoint(self, *args, **kwargs):
        """Preempted or timed out: stop the training (run KILLED), then requeue this same task."""
        submitit = require("submitit")
        self.preempt()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def _multi_task(self) -> str:
        """One element, N nodes x G tasks: rank 0 claims and trains as rank 0; the others train the same run."""
        import subprocess
        import sys

        from normlight.sweep.worker import spawn

        rank = int(os.environ.get("SLURM_PROCID", "0"))
        handoff = Path(self.log_dir) / "ranks" / f"{os.environ.get('SLURM_JOB_ID', 'job')}-{self.point_hash}.json"
        if rank == 0:
            handoff.parent.mkdir(parents=True, exist_ok=True)
            self._on_claim = lambda run_id: _write_json(handoff, {"run_id": run_id})
            try:
                return super().__call__()
            finally:
                if not handoff.exists():
                    _write_json(handoff, {"run_id": None})
        deadline = time.time() + 600
        while not handoff.exists():
            if time.time() > deadline:
                return "rank 0 never claimed the point"
            time.sleep(1.0)
        run_id = json.loads(handoff.read_text())["run_id"]
        if run_id is None:
            return "skipped (rank 0 did not claim the point)"
        from normlight.sweep.spec import LOGGER, load_sweep, plan

        sweep = load_sweep(self.sweep_file)
        run = {r.hash: r for r in plan(sweep)}[self.point_hash]
        cmd = [sys.executable, "-m", "normlight", *run.args(sweep, self.tracking_uri), *self.fit_args]
        proc = spawn([*cmd, f"--{LOGGER}.run_id", run_id], stdout=subprocess.DEVNULL)
        return f"rank {rank} exit code {proc.wait()}"


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def fit_args(resources: dict) -> list[str]:
    """The ``normlight fit`` flags that match a run's resources (devices per node, nodes)."""
    gpus, nodes = int(resources.get("gpus_per_task") or 0), int(resources.get("nodes") or 1)
    args = ["--trainer.accelerator", "gpu", "--trainer.devices", str(gpus)] if gpus else []
    if nodes > 1:
        args += ["--trainer.num_nodes", str(nodes)]
    return args


def executor_parameters(resources: dict, sweep_name: str, parallel: int | None) -> dict:
    """submitit ``AutoExecutor.update_parameters`` keywords for per-run ``resources``."""
    gpus, nodes = int(resources.get("gpus_per_task") or 0), int(resources.get("nodes") or 1)
    params: dict = {"name": f"normlight-{sweep_name}", "nodes": nodes, "tasks_per_node": 1}
    if nodes > 1 and gpus:  # Lightning's SLURM environment: one task per GPU
        params["tasks_per_node"] = gpus
    if gpus:
        params["gpus_per_node"] = gpus
    for ours, theirs in (("cpus_per_task", "cpus_per_task"), ("mem_gb", "mem_gb"), ("time_min", "timeout_min")):
        if resources.get(ours) is not None:
            params[theirs] = resources[ours]
    if resources.get("partition"):
        params["slurm_partition"] = resources["partition"]
    if resources.get("account"):
        params["slurm_account"] = resources["account"]
    if parallel:
        params["slurm_array_parallelism"] = parallel
    params.setdefault("timeout_min", 60)
    return params


def make_executor(folder: Path, resources: dict, sweep_name: str, cluster: str | None = None, parallel=None):
    """A submitit executor for the array: SLURM where ``srun`` exists, else (or with ``cluster='local'``) local."""
    submitit = require("submitit")
    if cluster not in (None, "slurm", "local"):
        raise SweepError(f"--slurm-cluster must be 'slurm' or 'local', got {cluster!r}")
    if cluster == "slurm" and shutil.which("srun") is None:
        raise SweepError("--slurm-cluster slurm: no 'srun' on PATH (is this a SLURM login node?)")
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = executor_parameters(resources, sweep_name, parallel)
    if ex.cluster != "slurm":
        if params.get("nodes", 1) > 1:
            raise SweepError("resources.nodes > 1 needs SLURM; submitit's local executor runs on one node")
        params = {k: v for k, v in params.items() if not k.startswith("slurm_") and k != "gpus_per_node"}
    ex.update_parameters(**params)
    return ex


def launch(
    sweep: Sweep,
    uri: str,
    runs: list[Run],
    log_dir: Path,
    *,
    resources: dict,
    retry_failed: bool,
    parent: str | None,
    cluster: str | None = None,
    workers: int | None = None,
    wait: bool = False,
    extra_fit_args: list[str] | tuple = (),
) -> dict[str, str]:
    """Submit ``runs`` as one job array; returns {hash: outcome} once they end (local executor or ``wait``),
    else {hash: 'submitted <job id>'} right after submission."""
    folder = log_dir / "submitit"
    ex = make_executor(folder, resources, sweep.name, cluster, workers)
    args = (*fit_args(resources), *extra_fit_args)
    tasks = [
        SlurmPointTask(
            str(sweep.path.resolve()),
            r.hash,
            uri,
            str(log_dir.resolve()),
            retry_failed=retry_failed,
            parent=parent,
            fit_args=args,
        )
        for r in runs
    ]
    with ex.batch():
        jobs = [ex.submit(t) for t in tasks]
    record = [{"hash": r.hash, "name": r.name, "job_id": j.job_id, "cluster": ex.cluster} for r, j in zip(runs, jobs)]
    _write_json(log_dir / JOBS_FILE, {"folder": str(folder.resolve()), "jobs": record})
    where = "SLURM" if ex.cluster == "slurm" else "submitit's local executor (no SLURM here)"
    print(f"[sweep] submitted {len(jobs)} array task(s) to {where}: job {jobs[0].job_id.split('_')[0]}", flush=True)
    if ex.cluster == "slurm" and not wait:
        print(f"[sweep] follow them with: normlight sweep {sweep.path} --status", flush=True)
        return {r.hash: f"submitted {j.job_id}" for r, j in zip(runs, jobs)}
    return _wait(runs, jobs)


def _wait(runs: list[Run], jobs: list) -> dict[str, str]:
    results = {}
    try:
        for r, j in zip(runs, jobs):
            try:
                results[r.hash] = str(j.result())
            except Exception as e:  # noqa: BLE001 - a task that crashed is a result of the sweep, not of the driver
                results[r.hash] = f"failed (task error: {str(e).strip().splitlines()[-1][:200]})"
            print(f"[sweep] {results[r.hash]:>10} {r.name} (task {j.job_id})", flush=True)
    except KeyboardInterrupt:
        for j in jobs:
            if not j.done():
                j.cancel(check=False)
        raise
    return results


def scheduler_states(log_dir: Path) -> dict[str, str]:
    """{point hash: scheduler state} for the array recorded in ``log_dir`` (empty when none was submitted)."""
    path = log_dir / JOBS_FILE
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    out = {}
    for job in record["jobs"]:
        if job["cluster"] == "slurm":
            submitit = require("submitit")
            try:
                out[job["hash"]] = submitit.SlurmJob(record["folder"], job["job_id"]).state
            except Exception:  # noqa: BLE001 - sacct unavailable: the store still tells most of the story
                out[job["hash"]] = "UNKNOWN"
        else:  # a local executor job: its id is the pid of its controller process
            out[job["hash"]] = "RUNNING" if _pid_alive(int(job["job_id"])) else "ENDED"
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


__all__ = ["SlurmPointTask", "executor_parameters", "fit_args", "launch", "make_executor", "scheduler_states"]
