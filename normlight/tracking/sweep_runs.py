"""The MLflow side of ``normlight sweep``: one experiment, one run record per grid point, found by tag.

The sweep process creates the experiment once (before any worker starts, so workers never race on
creating it or on migrating a fresh sqlite schema), creates each run itself with its tags and hands
the run id to the training process; so every attempt is recorded, even one that dies before logging.
"""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException

from normlight.tracking.mlflow_utils import default_artifact_location

HASH_TAG = "sweep_hash"
SWEEP_TAG = "sweep"
DONE, FAILED, INTERRUPTED = "FINISHED", "FAILED", "INTERRUPTED"


def client(tracking_uri: str) -> MlflowClient:
    """An MLflow client on ``tracking_uri`` (the parent folder of a sqlite file is created if missing)."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(c: MlflowClient, name: str, tracking_uri: str) -> str:
    """Id of experiment ``name``, created (artifacts beside a sqlite store) if it does not exist."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise MlflowException(
                f"experiment {name!r} is deleted in {tracking_uri}; restore it in the MLflow UI or pick another name"
            )
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=default_artifact_location(tracking_uri))
    except MlflowException:  # created concurrently by another process: use theirs
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def sweep_runs(c: MlflowClient, experiment_id: str, sweep: str) -> list[Run]:
    """All runs of ``sweep`` in the experiment (every page)."""
    runs, token = [], None
    while True:
        page = c.search_runs(
            [experiment_id], filter_string=f"tags.{SWEEP_TAG} = '{sweep}'", max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


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


def create_run(c: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    """Create a RUNNING run with ``tags``; returns its id."""
    return c.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def run_status(c: MlflowClient, run_id: str) -> str:
    """Current status string of a run (FINISHED, FAILED, RUNNING, KILLED, SCHEDULED)."""
    return c.get_run(run_id).info.status


def terminate(c: MlflowClient, run_id: str, status: str, note: str | None = None, log_file: str | None = None) -> None:
    """Mark a run FINISHED/FAILED/KILLED, optionally with a ``sweep_error`` note and the process log."""
    if note:
        c.set_tag(run_id, "sweep_error", note[-4000:])
    if log_file and Path(log_file).exists():
        try:
            c.log_artifact(run_id, log_file, "sweep")
        except (MlflowException, OSError):
            pass  # the log stays on disk; the status below matters more
    c.set_terminated(run_id, status)


def mark_killed(c: MlflowClient, run_ids) -> None:
    """Close runs left RUNNING by an interrupted sweep so the UI does not show them as running."""
    for rid in run_ids:
        if RunStatus.to_string(RunStatus.RUNNING) == run_status(c, rid):
            c.set_terminated(rid, "KILLED")
