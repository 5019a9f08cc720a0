"""The worker that trains grid points: claims a point, runs its ``normlight fit`` process, releases the claim.

Used by the local launcher (N worker threads) and by a remote task (``task.PointTask``: one point on a SLURM
array element or a Ray worker). A training process never outlives its driver: it runs in its own process group
(the driver's SIGINT / SIGTERM handler terminates the group) and, on Linux, gets SIGTERM from the kernel when the
driver dies (``PR_SET_PDEATHSIG``, also after a SIGKILL), so it saves ``last.ckpt`` and ends its run KILLED.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from normlight.sweep.spec import LOGGER, Run
from normlight.tracking import presentation, sweep_runs
from normlight.tracking.credentials import redact

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(parent_pid: int):
    """A ``preexec_fn`` making the child get SIGTERM when its parent dies (Linux), even by SIGKILL."""

    def set_death_signal() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the death signal was armed
            os._exit(143)

    return set_death_signal


def spawn(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Start ``cmd`` in its own process group, bound to die with this process (see :func:`die_with_parent`)."""
    bind = die_with_parent(os.getpid()) if os.name == "posix" else None
    return subprocess.Popen(cmd, start_new_session=True, preexec_fn=bind, **kwargs)


class _Executor:
    """Runs pending grid points with N worker threads, each driving one ``normlight fit`` process at a time."""

    def __init__(
        self,
        sweep,
        tracking_uri,
        client,
        experiment_id,
        workers,
        log_dir,
        retry_failed,
        max_runs,
        parent=None,
        fit_args=(),
    ):
        self.sweep, self.uri, self.c, self.exp = sweep, tracking_uri, client, experiment_id
        self.fit_args = list(fit_args)  # appended to every training command (the launcher's device flags)
        self.parent = parent  # the sweep's parent run: the UI folds the grid points under it
        self.workers, self.log_dir = workers, log_dir
        self.retry_failed, self.max_runs = retry_failed, max_runs
        self.lock = threading.Lock()  # the parent's own MLflow writes go one at a time
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping = False
        self.started = 0
        self.results: dict[str, str] = {}
        self.owner = sweep_runs.new_owner()
        self.lost: set[str] = set()
        self.beats = sweep_runs.Heartbeats(client, self.owner, self._lost)
        self.on_claim = None  # called with the run id of each point this executor claims (multi-rank tasks)

    def env(self) -> dict:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # N concurrent trainings share the cores instead of each grabbing all of them
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.workers)))
        return env

    def _lost(self, run_id: str) -> None:
        """Another driver took this point over (our heartbeats stopped reaching the store): stop our copy."""
        self.lost.add(run_id)
        with self.lock:
            proc = self.procs.get(run_id)
        if proc is not None:
            _terminate(proc)

    def _claim(self, run: Run) -> tuple[str | None, str]:
        with self.lock:
            if self.stopping or (self.max_runs is not None and self.started >= self.max_runs):
                return None, "not started"
            tags = {**run.tags, presentation.PARENT_RUN: self.parent} if self.parent else run.tags
            run_id, why = sweep_runs.claim(self.c, self.exp, run.name, tags, self.owner, retry_failed=self.retry_failed)
            if run_id is not None:
                self.started += 1
                self.beats.add(run_id)
            return run_id, why

    def run_one(self, run: Run) -> str:
        run_id, why = self._claim(run)
        if run_id is None:
            if why != "not started":
                print(f"[sweep] {'skip':>10} {run.name}: {why} ({run.hash})", flush=True)
                self.results.setdefault(run.hash, f"skipped: {why}")
            return why
        if self.on_claim is not None:
            self.on_claim(run_id)
        log = self.log_dir / f"{run.hash}-{run_id[:8]}.log"
        cmd = [sys.executable, "-m", "normlight", *run.args(self.sweep, self.uri), *self.fit_args]
        cmd += [f"--{LOGGER}.run_id", run_id]
        print(f"[sweep] start {run.name} ({run.hash}) run_id={run_id}", flush=True)
        with open(log, "w") as fh:
            fh.write(redact(shlex.join(cmd)) + "\n\n")
            fh.flush()
            with self.lock:
                proc = None if self.stopping else spawn(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env())
                if proc is not None:
                    self.procs[run_id] = proc
            rc = proc.wait() if proc is not None else None
        self.beats.discard(run_id)
        with self.lock:
            self.procs.pop(run_id, None)
            status = sweep_runs.run_status(self.c, run_id)
            if run_id in self.lost:
                result = "lost (another driver took the point over)"
            elif self.stopping:
                sweep_runs.release(self.c, run_id, "KILLED", "sweep interrupted", str(log))
                result = "killed"
            elif rc == 0 and status == "FINISHED":
                sweep_runs.release(self.c, run_id, "FINISHED", None, str(log))
                result = "finished"
            elif rc in (130, 143) and status == "KILLED":
                sweep_runs.release(self.c, run_id, "KILLED", f"training interrupted (exit code {rc})", str(log))
                result = "killed"
            else:
                tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
                why = (
                    f"exit code {rc}"
                    if rc
                    else "exited 0 but never closed its MLflow run (does the base config use normlight's MLflow logger?)"
                )
                sweep_runs.release(self.c, run_id, "FAILED", f"{why}\n{tail}", str(log))
                result = f"failed ({why.split(' (')[0]})"
        print(f"[sweep] {result:>10} {run.name} log={log}", flush=True)
        self.results[run.hash] = result
        return result

    def stop(self, signum=signal.SIGINT, frame=None):
        """Stop scheduling, terminate running trainings; their runs are marked KILLED."""
        with self.lock:
            self.stopping = self.stopping or signal.Signals(signum)
            procs = list(self.procs.values())
        for p in procs:
            _terminate(p)

    def run_all(self, runs: list[Run]) -> None:
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        if threading.current_thread() is threading.main_thread():
            for s in old:
                signal.signal(s, self.stop)
        try:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                list(pool.map(self.run_one, runs))
        finally:
            self.beats.stop()
            if threading.current_thread() is threading.main_thread():
                for s, h in old.items():
                    signal.signal(s, h)


def _terminate(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
