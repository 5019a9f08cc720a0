"""``normlight server``: the MLflow tracking server for a team, on a database store with an artifact root."""

from __future__ import annotations

import argparse
import importlib
import sys

from normlight.tracking.credentials import redact
from normlight.tracking.team_server import artifacts_uri, database_driver, server_command, with_driver
from normlight.tracking.ui import running_server, wait_until_up


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``normlight server``."""
    p = argparse.ArgumentParser(
        prog="normlight server",
        description="Run the MLflow tracking server on a database store (e.g. PostgreSQL) with an artifact root, "
        "for sweeps from many machines (docs/scale-out.md).",
    )
    p.add_argument(
        "--backend-store-uri",
        required=True,
        help="database store, e.g. postgresql://USER@HOST:5432/mlflow (put the password in ~/.pgpass or "
        "PGPASSWORD, not in the URI)",
    )
    p.add_argument(
        "--artifacts-destination",
        required=True,
        help="where the server stores artifacts: a folder, or object storage (s3://bucket/prefix, gs://, ...)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; 0.0.0.0 for a team)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    return p


def main(argv: list[str]) -> int:
    """Start the server, print its tracking URI, and wait; stop it cleanly on Ctrl-C / SIGTERM."""
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "server" else argv)
    driver = database_driver(args.backend_store_uri)
    if driver:
        try:
            importlib.import_module(driver)
        except ImportError:
            print(
                f"error: --backend-store-uri {redact(args.backend_store_uri)} needs the {driver!r} package: "
                "pip install 'normlight[postgres]'",
                file=sys.stderr,
            )
            return 2
    cmd = server_command(
        with_driver(args.backend_store_uri),
        artifacts_uri(args.artifacts_destination),
        args.host,
        args.port,
        args.workers,
    )
    with running_server(cmd, "normlight server") as proc:
        print(
            f"normlight server: store {redact(args.backend_store_uri)}, artifacts {redact(args.artifacts_destination)}",
            flush=True,
        )
        if args.host in ("127.0.0.1", "localhost", "0.0.0.0") and wait_until_up(args.port, proc, timeout=300):
            print(f"normlight server: up; use --tracking-uri http://{args.host}:{args.port}", flush=True)
        return proc.wait()
    return 0  # stopped by Ctrl-C or SIGTERM
