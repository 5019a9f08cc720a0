"""Artifacts stored relative to the tracking store, the way ``mlflow server`` proxies them.

Experiments created by normlight on a sqlite store get the artifact location ``mlflow-artifacts:/`` (MLflow's
store-relative scheme), so a run's artifacts live at ``mlflow-artifacts:/<run id>/artifacts``: a path, not a
machine's absolute directory. Two readers resolve it:

- the MLflow server (``normlight ui``) serves it from ``--artifacts-destination`` = ``mlartifacts/`` beside the
  sqlite file;
- a normlight process talking to the sqlite file directly (``normlight fit``, ``sweep``, ``compare``) resolves it
  to the same ``mlartifacts/`` folder through the repository installed here. With an ``http(s)`` tracking URI
  MLflow's own proxied repository is used unchanged.

So a copied or moved project keeps its artifacts and writes new ones into its own ``mlartifacts/``. Plain
MLflow code (without normlight imported) reads such a store's artifacts through a server, as for any
proxied store.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

SCHEME = "mlflow-artifacts"
ROOT_URI = f"{SCHEME}:/"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative paths resolved from the working directory)."""
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :].split("?", 1)[0]).resolve()


def artifacts_dir(tracking_uri: str) -> Path | None:
    """``mlartifacts/`` beside a sqlite store's file; None for other stores (the server decides)."""
    db = sqlite_path(tracking_uri)
    return None if db is None else db.parent / "mlartifacts"


def repository(artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
    """MLflow artifact repository for ``mlflow-artifacts:`` URIs: the local ``mlartifacts/`` folder of a sqlite
    store, else MLflow's proxied (http) repository."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
    from mlflow.tracking._tracking_service.utils import get_tracking_uri

    root = artifacts_dir(tracking_uri or get_tracking_uri())
    if root is None:
        return MlflowArtifactsRepository(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
    local = root.joinpath(*[p for p in urlparse(artifact_uri).path.split("/") if p])
    return LocalArtifactRepository(local.as_uri(), tracking_uri=tracking_uri, registry_uri=registry_uri)


def install() -> None:
    """Use :func:`repository` for ``mlflow-artifacts:`` URIs in this process (idempotent)."""
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry

    _artifact_repository_registry.register(SCHEME, repository)
