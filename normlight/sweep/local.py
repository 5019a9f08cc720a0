"""Run a sweep's pending grid points: here (``workers`` threads, each driving one ``normlight fit`` process; see
``worker.py``), or as a SLURM job array (``slurm.py``) or Ray tasks (``ray_tasks.py``).

A point's identity is its config hash (tag ``sweep_hash``): a finished point is skipped and never
overwritten, a failed one is re-run only with ``retry_failed``, an interrupted (KILLED) one is re-run.
Before training a point, a worker or task claims it (``tracking.sweep_runs.claim``), so any number of sweep
drivers, array tasks and Ray tasks on the same store, here or on other machines, run each point once; the
claims are kept alive by a heartbeat while the point trains.
"""

from __future__ import annotations

import os
import shlex
import signal
from pathlib import Path

from normlight.sweep.extras import require
from normlight.sweep.spec import Run, Sweep, SweepError, check_resources, plan
from normlight.sweep.worker import _Executor, die_with_parent, spawn
from normlight.tracking import presentation, sweep_runs
from normlight.tracking.credentials import move_to_env, redact

__all__ = ["LAUNCHERS", "die_with_parent", "run_sweep", "spawn"]


LAUNCHERS = ("local", "slurm", "ray")


def _launch(
    launcher, sweep, uri, runs, log_dir, resources, retry_failed, parent, workers, cluster, wait, address, extra
):
    """Hand ``runs`` to the SLURM or Ray launcher; {hash: outcome} (each outcome as a local worker reports it)."""
    if launcher == "slurm":
        from normlight.sweep import slurm

        return slurm.launch(
            sweep,
            uri,
            runs,
            log_dir,
            resources=resources,
            retry_failed=retry_failed,
            parent=parent,
            cluster=cluster,
            workers=workers,
            wait=wait,
            extra_fit_args=extra,
        )
    from normlight.sweep import ray_tasks

    return ray_tasks.launch(
        sweep,
        uri,
        runs,
        log_dir,
        resources=resources,
        retry_failed=retry_failed,
        parent=parent,
        workers=workers,
        address=address,
        extra_fit_args=extra,
    )


def _existing_state(sweep: Sweep, uri: str) -> dict:
    """The sweep's recorded state without creating anything: empty when the store or experiment is missing."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        return {}
    c = sweep_runs.client(uri)  # the store exists (or is a server): opening it creates nothing
    exp = c.get_experiment_by_name(sweep.experiment)
    return {} if exp is None else sweep_runs.state_by_hash(sweep_runs.sweep_runs(c, exp.experiment_id, sweep.name))


def run_sweep(
    sweep: Sweep,
    uri: str,
    *,
    workers: int = 1,
    retry_failed: bool = False,
    max_runs: int | None = None,
    log_dir: str | os.PathLike | None = None,
    dry_run: bool = False,
    launcher: str = "local",
    resources: dict | None = None,
    slurm_cluster: str | None = None,
    wait: bool = False,
    ray_address: str | None = None,
    runs: list[Run] | None = None,
    fit_args: list[str] | None = None,
) -> int:
    """Run the pending points of ``sweep`` into the store at ``uri``; returns the exit code of ``normlight sweep``.

    ``launcher``: ``local`` (``workers`` processes here), ``slurm`` (a submitit job array; ``slurm_cluster``
    ``local`` runs it with submitit's local executor, ``wait`` blocks until a real array ends) or ``ray`` (one
    Ray task per point, ``workers`` at a time, on ``ray_address`` or a local instance). ``resources`` (per run)
    override the sweep file's. ``runs`` restricts the sweep to these points and ``fit_args`` are appended to
    every training command (the searches use both)."""
    if launcher not in LAUNCHERS:
        raise SweepError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    resources = {**sweep.resources, **check_resources(resources or {}, "resources")}
    if launcher != "local":  # a missing extra fails here, before any run is created
        require("submitit" if launcher == "slurm" else "ray")
    uri = move_to_env(uri)  # http(s) credentials -> MLflow's env vars, inherited by the training processes
    runs = plan(sweep) if runs is None else runs
    if dry_run:  # read what exists, create nothing (no store file, no experiment, no folder)
        c, exp_id, state = None, None, _existing_state(sweep, uri)
    else:
        c = sweep_runs.client(uri)
        exp_id = sweep_runs.ensure_experiment(c, sweep.experiment, uri)  # once, before any worker
        state = sweep_runs.state_by_hash(sweep_runs.sweep_runs(c, exp_id, sweep.name))
    pending, skipped, held = [], [], []
    for r in runs:
        st = state.get(r.hash, {}).get("state")
        if st == sweep_runs.DONE:
            skipped.append(r)
        elif st == sweep_runs.FAILED and not retry_failed:
            held.append(r)
        else:
            pending.append(r)
    print(
        f"[sweep] {sweep.name}: {len(runs)} runs in the grid -> {len(skipped)} finished (skipped), "
        f"{len(held)} failed (kept; --retry-failed re-runs them), {len(pending)} to run; "
        f"experiment {sweep.experiment!r} at {redact(uri)}",
        flush=True,
    )

    if dry_run:
        for r in pending[:max_runs]:
            print(redact(shlex.join(["normlight", *r.args(sweep, uri)])))
        return 0
    if not pending:
        return 1 if held else 0

    log_dir = Path(log_dir or Path("runs") / "sweeps" / sweep.name)
    log_dir.mkdir(parents=True, exist_ok=True)
    parent = presentation.sweep_parent(c, exp_id, sweep.name, sweep.description)
    ex = _Executor(sweep, uri, c, exp_id, workers, log_dir, retry_failed, max_runs, parent, fit_args or ())
    try:
        if launcher == "local":
            ex.run_all(pending)
        else:
            ex.results.update(
                _launch(
                    launcher,
                    sweep,
                    uri,
                    pending[:max_runs],
                    log_dir,
                    resources,
                    retry_failed,
                    parent,
                    workers,
                    slurm_cluster,
                    wait,
                    ray_address,
                    fit_args or [],
                )
            )
    except KeyboardInterrupt:
        ex.stopping = signal.SIGINT
    finally:
        c.set_terminated(parent, "KILLED" if ex.stopping else "FINISHED")
        presentation.update_view(c, exp_id)
    if any(res.startswith("submitted") for res in ex.results.values()):
        return 0  # a SLURM array is queued; --status follows it
    bad = {h: res for h, res in ex.results.items() if res != "finished" and not res.startswith("skipped")}
    skipped_now = sum(1 for res in ex.results.values() if res.startswith("skipped"))
    done = sum(1 for res in ex.results.values() if res == "finished")
    print(
        f"[sweep] done: {done} finished, {len(bad)} not finished, {len(skipped) + skipped_now} skipped",
        flush=True,
    )
    if ex.stopping:
        return 128 + int(ex.stopping)  # 130 after Ctrl-C, 143 after SIGTERM
    held_now = any(res == "skipped: failed" for res in ex.results.values())
    return 1 if bad or held or held_now else 0
