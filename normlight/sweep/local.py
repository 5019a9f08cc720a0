"""Run a sweep's pending grid points on this machine: N worker threads, each driving one ``normlight fit`` process.

A point's identity is its config hash (tag ``sweep_hash``): a finished point is skipped and never
overwritten, a failed one is re-run only with ``retry_failed``, an interrupted one (killed sweep) is re-run.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from normlight.sweep.spec import LOGGER, Run, Sweep, plan
from normlight.tracking import presentation, sweep_runs


class _Executor:
    """Runs pending grid points with N worker threads, each driving one ``normlight fit`` process at a time."""

    def __init__(self, sweep, tracking_uri, client, experiment_id, workers, log_dir, parent=None):
        self.sweep, self.uri, self.c, self.exp = sweep, tracking_uri, client, experiment_id
        self.parent = parent  # the sweep's parent run: the UI folds the grid points under it
        self.workers, self.log_dir = workers, log_dir
        self.lock = threading.Lock()  # the parent's own MLflow writes go one at a time
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping = False
        self.results: dict[str, str] = {}

    def env(self) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # N concurrent trainings share the cores instead of each grabbing all of them
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.workers)))
        return env

    def run_one(self, run: Run) -> str:
        if self.stopping:
            return "not started"
        with self.lock:
            tags = {**run.tags, presentation.PARENT_RUN: self.parent} if self.parent else run.tags
            run_id = sweep_runs.create_run(self.c, self.exp, run.name, tags)
        log = self.log_dir / f"{run.hash}-{run_id[:8]}.log"
        cmd = [sys.executable, "-m", "normlight", *run.args(self.sweep, self.uri), f"--{LOGGER}.run_id", run_id]
        print(f"[sweep] start {run.name} ({run.hash}) run_id={run_id}", flush=True)
        with open(log, "w") as fh:
            fh.write(shlex.join(cmd) + "\n\n")
            fh.flush()
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
            with self.lock:
                self.procs[run_id] = proc
            rc = proc.wait()
        with self.lock:
            self.procs.pop(run_id, None)
            status = sweep_runs.run_status(self.c, run_id)
            if self.stopping:
                sweep_runs.terminate(self.c, run_id, "KILLED", "sweep interrupted", str(log))
                result = "killed"
            elif rc == 0 and status == "FINISHED":
                sweep_runs.terminate(self.c, run_id, "FINISHED", None, str(log))
                result = "finished"
            else:
                tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
                why = (
                    f"exit code {rc}"
                    if rc
                    else "exited 0 but never closed its MLflow run (does the base config use normlight's MLflow logger?)"
                )
                sweep_runs.terminate(self.c, run_id, "FAILED", f"{why}\n{tail}", str(log))
                result = f"failed ({why.split(' (')[0]})"
        print(f"[sweep] {result:>10} {run.name} log={log}", flush=True)
        self.results[run.hash] = result
        return result

    def stop(self, *_):
        """Stop scheduling, terminate running trainings; their runs are marked KILLED."""
        self.stopping = True
        with self.lock:
            procs = list(self.procs.values())
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run_all(self, runs: list[Run]) -> None:
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        if threading.current_thread() is threading.main_thread():
            for s in old:
                signal.signal(s, self.stop)
        try:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                list(pool.map(self.run_one, runs))
        finally:
            if threading.current_thread() is threading.main_thread():
                for s, h in old.items():
                    signal.signal(s, h)


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
) -> int:
    """Run the pending points of ``sweep`` into the store at ``uri``; returns the exit code of ``normlight sweep``."""
    runs = plan(sweep)
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
    if max_runs is not None:
        pending = pending[:max_runs]
    print(
        f"[sweep] {sweep.name}: {len(runs)} runs in the grid -> {len(skipped)} finished (skipped), "
        f"{len(held)} failed (kept; --retry-failed re-runs them), {len(pending)} to run; "
        f"experiment {sweep.experiment!r} at {uri}",
        flush=True,
    )

    if dry_run:
        for r in pending:
            print(shlex.join(["normlight", *r.args(sweep, uri)]))
        return 0
    if not pending:
        return 1 if held else 0

    # close runs that a killed sweep left RUNNING before starting their replacements
    for r in pending:
        sweep_runs.mark_killed(c, [rid for rid, st in state.get(r.hash, {}).get("interrupted", []) if st == "RUNNING"])
    log_dir = Path(log_dir or Path("runs") / "sweeps" / sweep.name)
    log_dir.mkdir(parents=True, exist_ok=True)
    parent = presentation.sweep_parent(c, exp_id, sweep.name, sweep.description)
    ex = _Executor(sweep, uri, c, exp_id, workers, log_dir, parent)
    try:
        ex.run_all(pending)
    finally:
        c.set_terminated(parent, "KILLED" if ex.stopping else "FINISHED")
        presentation.update_view(c, exp_id)
    bad = {h: res for h, res in ex.results.items() if res != "finished"}
    print(
        f"[sweep] done: {len(ex.results) - len(bad)} finished, {len(bad)} not finished, {len(skipped)} skipped",
        flush=True,
    )
    if ex.stopping:
        return 130
    return 1 if bad or held else 0
