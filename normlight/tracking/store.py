"""Create (or migrate) a sqlite MLflow store exactly once, however many processes start on it at the same time.

MLflow creates the schema of a new sqlite file when the first client opens it, with no lock: three
``normlight fit`` started together on a new store crash in ``table ... already exists`` or an alembic
migration error. :func:`prepare_store` opens the store under an exclusive file lock (``<file>.lock`` beside
it), so one process creates the tables and the others wait, then find them. Other stores (a server, a
database server) manage their own schema and are left alone.
"""

from __future__ import annotations

from pathlib import Path

try:  # POSIX; elsewhere the store is opened without the lock (MLflow's own behaviour)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from normlight.errors import NormlightError
from normlight.tracking import artifacts

_READY: set[str] = set()


class StoreError(NormlightError):
    """The tracking store cannot be used as asked (e.g. the experiment is deleted)."""


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (relative paths are relative to the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def prepare_store(uri: str) -> None:
    """Make the store at ``uri`` ready to use: for sqlite, its folder exists and its schema is created or migrated
    by exactly one process (under a file lock). Cheap after the first call in a process."""
    path = sqlite_path(uri)
    if path is None or uri in _READY:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    if fcntl is None:
        MlflowClient(uri)
    else:
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                MlflowClient(uri).search_experiments(max_results=1)  # creates / migrates the schema if needed
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    _READY.add(uri)


def default_artifact_location(tracking_uri: str) -> str | None:
    """``mlflow-artifacts:/`` for a sqlite store: recorded relative to the store, resolved to ``mlartifacts/``
    beside the sqlite file (:mod:`normlight.tracking.artifacts`), so a copied or moved project keeps its own;
    None (the server decides) otherwise."""
    return artifacts.ROOT_URI if sqlite_path(tracking_uri) is not None else None


def ensure_experiment(client, name: str, tracking_uri: str, artifact_location: str | None = None) -> str:
    """Id of experiment ``name``, created if missing (artifacts beside a sqlite store unless ``artifact_location``
    is given). Safe when several processes create it at once: the losers use the winner's."""
    from mlflow.exceptions import MlflowException

    from normlight.tracking.credentials import redact

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(
                name, artifact_location=artifact_location or default_artifact_location(tracking_uri)
            )
        except MlflowException:  # created concurrently by another process: use theirs
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise StoreError(
            f"experiment {name!r} is deleted in {redact(tracking_uri)}; restore it in the MLflow UI or pick another name"
        )
    return exp.experiment_id


__all__ = ["StoreError", "default_artifact_location", "ensure_experiment", "prepare_store", "sqlite_path"]
