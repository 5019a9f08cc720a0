"""The MLflow side of ``normlight sweep``: one experiment, one run record per grid point, found by tag, and the
exactly-once claim of a grid point that any number of drivers (on any machines) may race for.

A grid point's identity is its config hash (tag ``sweep_hash``). A driver runs a point only after
:func:`claim` returned a run id for it; the claim IS the point's run (created RUNNING with the tags
``sweep_owner`` and ``sweep_heartbeat``), so every attempt is recorded, even one that dies before logging.

Exactly once, with no lock server (the store is the only shared thing): a driver creates its claim, then
reads every active run of the point. It keeps the claim only if no other live claim and no finished run is
there; otherwise it deletes its claim and, after a random pause, looks again. Two drivers claiming at the
same moment see each other and both step back (then one wins); a driver that claims later sees the
earlier, live claim. A claim is live while its owner refreshes ``sweep_heartbeat`` (:func:`heartbeat`,
every ``HEARTBEAT_EVERY`` s); one not refreshed for ``STALE_AFTER`` s (the owner was killed) is marked KILLED
by the next driver, which may then claim the point. Heartbeats use the drivers' wall clocks: machines
sharing a store must agree on the time within a minute (NTP).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Mapping

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from normlight.tracking.store import default_artifact_location, prepare_store
from normlight.tracking.store import ensure_experiment as _ensure_experiment

HASH_TAG = "sweep_hash"
SWEEP_TAG = "sweep"
OWNER_TAG = "sweep_owner"
HEARTBEAT_TAG = "sweep_heartbeat"
TAKEN_OVER_TAG = "sweep_taken_over_by"
DONE, FAILED, INTERRUPTED = "FINISHED", "FAILED", "INTERRUPTED"
HEARTBEAT_EVERY = 10.0
STALE_AFTER = 90.0

__all__ = [
    "DONE",
    "FAILED",
    "HASH_TAG",
    "HEARTBEAT_TAG",
    "INTERRUPTED",
    "OWNER_TAG",
    "SWEEP_TAG",
    "Heartbeats",
    "claim",
    "client",
    "default_artifact_location",
    "ensure_experiment",
    "heartbeat",
    "new_owner",
    "release",
    "state_by_hash",
    "sweep_runs",
]


def client(tracking_uri: str) -> MlflowClient:
    """An MLflow client on ``tracking_uri`` (a new sqlite store is created once, under a file lock)."""
    prepare_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(c: MlflowClient, name: str, tracking_uri: str) -> str:
    """Id of experiment ``name``, created (artifacts beside a sqlite store) if it does not exist."""
    return _ensure_experiment(c, name, tracking_uri)


def _search(c: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = c.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def sweep_runs(c: MlflowClient, experiment_id: str, sweep: str) -> list[Run]:
    """All runs of ``sweep`` in the experiment (every page)."""
    return _search(c, experiment_id, f"tags.{SWEEP_TAG} = '{sweep}'")


def point_runs(c: MlflowClient, experiment_id: str, sweep: str, point_hash: str) -> list[Run]:
    """All active runs of one grid point."""
    return _search(c, experiment_id, f"tags.{SWEEP_TAG} = '{sweep}' and tags.{HASH_TAG} = '{point_hash}'")


def state_by_hash(runs: list[Run]) -> dict[str, dict]:
    """Per config hash: ``state`` (FINISHED beats FAILED beats INTERRUPTED) and the run ids per status."""
    out: dict[str, dict] = {}
    for r in runs:
        h = r.data.tags.get(HASH_TAG)
        if not h:
            continue
        rec = out.setdefault(h, {"state": None, "finished": [], "failed": [], "interrupted": []})
        status = r.info.status
        if status == "FINISHED":
            rec["finished"].append(r.info.run_id)
        elif status == "FAILED":
            rec["failed"].append(r.info.run_id)
        else:  # RUNNING / SCHEDULED left by a killed sweep, or KILLED
            rec["interrupted"].append((r.info.run_id, status))
    for rec in out.values():
        rec["state"] = DONE if rec["finished"] else FAILED if rec["failed"] else INTERRUPTED
    return out


# ---------------------------------------------------------------------------------------------- claims
def new_owner() -> str:
    """A driver identity: ``host:pid:random`` (unique even for two drivers in one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_live(run: Run, now: float | None = None, stale_after: float = STALE_AFTER) -> bool:
    """A RUNNING claim whose owner refreshed its heartbeat within ``stale_after`` seconds."""
    if run.info.status != "RUNNING":
        return False
    try:
        beat = float(run.data.tags.get(HEARTBEAT_TAG, "nan"))
    except ValueError:
        return False
    return (now if now is not None else time.time()) - beat <= stale_after  # nan (no heartbeat): never live


def claim(
    c: MlflowClient,
    experiment_id: str,
    run_name: str,
    tags: Mapping[str, str],
    owner: str,
    *,
    retry_failed: bool = False,
    stale_after: float = STALE_AFTER,
    attempts: int = 20,
) -> tuple[str | None, str]:
    """Claim the grid point ``tags[HASH_TAG]`` of sweep ``tags[SWEEP_TAG]`` for ``owner``.

    Returns ``(run_id, "claimed")`` when this owner must now run the point (the run is RUNNING, tagged with
    the owner and a fresh heartbeat), else ``(None, why)`` with why = ``finished`` (a run of the point
    finished), ``failed`` (its last run failed and ``retry_failed`` is off) or ``running`` (a live claim of
    another driver). Stale claims (no heartbeat for ``stale_after`` s) are marked KILLED on the way.
    """
    sweep, point = tags[SWEEP_TAG], tags[HASH_TAG]
    rng = random.Random(f"{owner}:{point}")
    for _ in range(attempts):
        runs = point_runs(c, experiment_id, sweep, point)
        why = _taken(runs, owner, retry_failed, stale_after)
        if why:
            return None, why
        _mark_stale(c, runs, owner, stale_after)
        mine = c.create_run(
            experiment_id,
            run_name=run_name,
            tags={**tags, OWNER_TAG: owner, HEARTBEAT_TAG: f"{time.time():.3f}"},
        ).info.run_id
        rivals = [
            r
            for r in point_runs(c, experiment_id, sweep, point)
            if r.info.run_id != mine and (r.info.status == "FINISHED" or is_live(r, stale_after=stale_after))
        ]
        if not rivals:
            return mine, "claimed"
        c.delete_run(mine)  # step back; whoever is still there after the pause keeps the point
        time.sleep(rng.uniform(0.2, 1.5))
    return None, "running"


def _taken(runs: list[Run], owner: str, retry_failed: bool, stale_after: float) -> str | None:
    if any(r.info.status == "FINISHED" for r in runs):
        return "finished"
    now = time.time()
    if any(is_live(r, now, stale_after) and r.data.tags.get(OWNER_TAG) != owner for r in runs):
        return "running"
    if not retry_failed and any(r.info.status == "FAILED" for r in runs):
        return "failed"
    return None


def _mark_stale(c: MlflowClient, runs: list[Run], owner: str, stale_after: float) -> None:
    """Close RUNNING records whose owner stopped beating (or that never had a heartbeat: an old sweep's)."""
    now = time.time()
    for r in runs:
        if r.info.status == "RUNNING" and not is_live(r, now, stale_after):
            try:
                c.set_tag(r.info.run_id, TAKEN_OVER_TAG, owner)
                c.set_terminated(r.info.run_id, "KILLED")
            except MlflowException:  # another driver closed it at the same moment (sqlite: a UNIQUE tag race)
                continue


def heartbeat(c: MlflowClient, run_id: str, owner: str) -> bool:
    """Refresh ``owner``'s claim on ``run_id``; False if another driver took the point over (then stop it)."""
    tags = c.get_run(run_id).data.tags
    if tags.get(TAKEN_OVER_TAG) or tags.get(OWNER_TAG) != owner:
        return False
    c.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
    return True


def release(c: MlflowClient, run_id: str, status: str, note: str | None = None, log_file: str | None = None) -> None:
    """End a claim: mark the run FINISHED/FAILED/KILLED, optionally with a ``sweep_error`` note and the log."""
    if note:
        c.set_tag(run_id, "sweep_error", note[-4000:])
    if log_file and Path(log_file).exists():
        try:
            c.log_artifact(run_id, log_file, "sweep")
        except (MlflowException, OSError):
            pass  # the log stays on disk; the status below matters more
    c.set_terminated(run_id, status)


terminate = release  # the earlier name


def run_status(c: MlflowClient, run_id: str) -> str:
    """Current status string of a run (FINISHED, FAILED, RUNNING, KILLED, SCHEDULED)."""
    return c.get_run(run_id).info.status


def create_run(c: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Create a RUNNING run with ``tags`` and no claim tags (what a killed sweep of an older version left)."""
    return c.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


class Heartbeats:
    """A daemon thread that refreshes every claim a driver holds; calls ``on_lost(run_id)`` for a claim another
    driver took over (its owner should stop that run). Store errors are retried at the next beat."""

    def __init__(self, c: MlflowClient, owner: str, on_lost: Callable[[str], None], every: float = HEARTBEAT_EVERY):
        self.c, self.owner, self.on_lost, self.every = c, owner, on_lost, every
        self._ids: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="normlight-sweep-heartbeat", daemon=True)
        self._thread.start()

    def add(self, run_id: str) -> None:
        """Keep ``run_id``'s claim alive."""
        with self._lock:
            self._ids.add(run_id)

    def discard(self, run_id: str) -> None:
        """Stop refreshing ``run_id`` (its run ended)."""
        with self._lock:
            self._ids.discard(run_id)

    def stop(self) -> None:
        """End the thread."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                ids = sorted(self._ids)  # the same order at every beat
            for rid in ids:
                try:
                    alive = heartbeat(self.c, rid, self.owner)
                except Exception:  # noqa: BLE001 - an unreachable store: try again at the next beat
                    continue
                if not alive:
                    self.discard(rid)
                    self.on_lost(rid)


def mark_killed(c: MlflowClient, run_ids) -> None:
    """Close runs left RUNNING by an interrupted sweep so the UI does not show them as running."""
    for rid in run_ids:
        if run_status(c, rid) == "RUNNING":
            c.set_terminated(rid, "KILLED")
