"""The team tracking server for ``normlight server``: MLflow's server on a database store (PostgreSQL, MySQL,
sqlite) with an artifact root that the server proxies (a folder, or object storage such as ``s3://bucket/mlflow``).

Every driver, array task and Ray task then uses ``--tracking-uri http://HOST:PORT``: runs, metrics and claims go
to the database through the server, artifacts (config.yaml, logs, checkpoints' metadata) through its artifact
proxy, so no machine needs database or bucket credentials except the server's. The server runs as the
deployments in MLflow's docs do (``mlflow server --backend-store-uri ... --artifacts-destination ...``), with
MLflow's background job runners off.
"""

from __future__ import annotations

import sys
from pathlib import Path


def server_command(
    backend_store_uri: str, artifacts_destination: str, host: str = "127.0.0.1", port: int = 5000, workers: int = 2
) -> list[str]:
    """The ``mlflow server`` command line of a team server."""
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    return cmd + [
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def artifacts_uri(destination: str) -> str:
    """An artifact root as MLflow wants it: a local folder becomes an absolute ``file://`` URI (created)."""
    if "://" in destination:
        return destination
    folder = Path(destination).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def with_driver(backend_store_uri: str) -> str:
    """``postgresql://...`` -> ``postgresql+psycopg2://...``: SQLAlchemy 2.1 defaults to psycopg 3, while the
    ``postgres`` extra installs psycopg2 (its binary wheel). Other URIs are returned unchanged."""
    scheme, sep, rest = backend_store_uri.partition("://")
    return (
        f"postgresql+psycopg2://{rest}" if sep and scheme.lower() in ("postgresql", "postgres") else backend_store_uri
    )


def database_driver(backend_store_uri: str) -> str | None:
    """The Python module a database store needs (``psycopg2`` for postgresql, ...), or None."""
    scheme = backend_store_uri.split("://", 1)[0].lower()
    if scheme.startswith(("postgresql", "postgres")):
        return "psycopg2" if "+" not in scheme or scheme.endswith("+psycopg2") else None
    return None


__all__ = ["artifacts_uri", "database_driver", "server_command", "with_driver"]
