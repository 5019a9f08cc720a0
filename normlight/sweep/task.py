"""One grid point, run wherever this process is: a SLURM array task, a Ray task, any remote worker.

A :class:`PointTask` holds only plain values (the sweep file, the point's config hash, the store URI, ...), so a
launcher can ship it to another machine. Called there, it does what a local sweep worker does for one point
(``worker._Executor.run_one``): **claim** the point in the tracking store (``tracking.sweep_runs.claim``), train it
as a ``normlight fit`` process while a heartbeat keeps the claim live, and release the claim with the outcome.
So the exactly-once rules hold across machines: a task whose point is finished, or claimed by a live owner,
exits without training; a point whose owner died is taken over once its heartbeat is stale.

:meth:`PointTask.preempt` is what a scheduler's preemption signal calls: it stops the training (SIGTERM: the
process saves ``last.ckpt`` and ends its run KILLED) and waits until the claim is released KILLED, so the
requeued task claims the point again and re-runs it once.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from normlight.sweep.spec import SweepError, load_sweep, plan


class PointTask:
    """Run grid point ``point_hash`` of the sweep file ``sweep_file`` into the store at ``tracking_uri``."""

    def __init__(
        self,
        sweep_file: str,
        point_hash: str,
        tracking_uri: str,
        log_dir: str,
        *,
        retry_failed: bool = False,
        parent: str | None = None,
        fit_args: tuple[str, ...] = (),
    ):
        self.sweep_file, self.point_hash, self.tracking_uri = str(sweep_file), point_hash, tracking_uri
        self.log_dir, self.retry_failed, self.parent = str(log_dir), retry_failed, parent
        self.fit_args = tuple(fit_args)
        self.workdir = os.getcwd()  # the driver's folder (a remote task works there when it exists)
        self._executor = None
        self._done = threading.Event()

    def __call__(self) -> str:
        """Claim, train and release the point; returns the outcome (``finished``, ``skipped: running``, ...)."""
        from normlight.sweep.worker import _Executor  # the same worker a local sweep uses
        from normlight.tracking import sweep_runs

        if os.path.isdir(self.workdir):  # relative paths (base config, checkpoints) resolve as on the driver
            os.chdir(self.workdir)
        sweep = load_sweep(self.sweep_file)
        runs = {r.hash: r for r in plan(sweep)}
        if self.point_hash not in runs:
            raise SweepError(f"{self.sweep_file}: no grid point with hash {self.point_hash} (was the file edited?)")
        run = runs[self.point_hash]
        c = sweep_runs.client(self.tracking_uri)
        exp = sweep_runs.ensure_experiment(c, sweep.experiment, self.tracking_uri)
        log_dir = Path(self.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self._done.clear()
        ex = _Executor(
            sweep, self.tracking_uri, c, exp, 1, log_dir, self.retry_failed, None, self.parent, self.fit_args
        )
        ex.on_claim = getattr(self, "_on_claim", None)
        self._executor = ex
        # the point runs in a worker thread, so the main thread stays free for the scheduler's signal handlers
        worker = threading.Thread(target=self._run, args=(ex, run), name="normlight-point", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.2)
        except BaseException:  # Ctrl-C / a cancelled task: the training ends KILLED, not orphaned
            self.preempt()
            raise
        finally:
            ex.beats.stop()
        return ex.results.get(run.hash, "not started")

    def _run(self, ex, run) -> None:
        try:
            ex.run_one(run)
        finally:
            self._done.set()

    def __getstate__(self) -> dict:
        # only the plain fields travel to the machine that runs the task (not the store client, threads, locks)
        return {k: v for k, v in self.__dict__.items() if k not in ("_executor", "_done")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._executor, self._done = None, threading.Event()

    def preempt(self, timeout: float = 300.0) -> None:
        """Stop the training now (it saves ``last.ckpt``, its run ends KILLED) and wait for the claim's release."""
        ex = self._executor
        if ex is None:
            return
        ex.stop(signal.SIGTERM)
        self._done.wait(timeout)
