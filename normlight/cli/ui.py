"""``normlight ui``: the MLflow UI on this project's tracking store, bound to 127.0.0.1 (see normlight.tracking.ui)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlparse

from normlight.tracking.credentials import redact
from normlight.tracking.mlflow_utils import default_tracking_uri
from normlight.tracking.ui import (
    DEFAULT_PORT,
    experiment_links,
    running_server,
    server_command,
    ui_link,
    wait_until_up,
)


def main(argv: list[str]) -> int:
    """Start the UI server, print its URL, and wait; stop it cleanly on Ctrl-C / SIGTERM."""
    p = argparse.ArgumentParser(
        prog="normlight ui", description="Start the MLflow UI on this project's store, bound to 127.0.0.1."
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.add_argument(
        "--open", action="store_true", help="open the newest experiment's runs in the web browser once the UI is up"
    )
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)"
    )
    args = p.parse_args(argv[1:] if argv and argv[0] == "ui" else argv)
    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(urlparse(uri).path)
        if not db.exists():
            print(
                f"error: no MLflow store at {db}; train something first (normlight fit ... or normlight "
                "quickstart) in this directory, or pass --tracking-uri",
                file=sys.stderr,
            )
            return 1
    with running_server(server_command(uri, args.port), "normlight ui") as proc:
        print(f"normlight ui: MLflow UI for {redact(uri)} at http://127.0.0.1:{args.port} (Ctrl-C to stop)", flush=True)
        try:
            links = experiment_links(uri, args.port)
        except Exception as exc:  # noqa: BLE001 - the links are a convenience; the server is what matters
            print(f"normlight ui: could not list the experiments ({exc})", flush=True)
            links = []
        for name, link in links:
            print(f"  {name}: {link}", flush=True)
        if args.open and wait_until_up(args.port, proc):
            import webbrowser

            target = links[0][1] if links else ui_link(port=args.port)
            if not webbrowser.open(target):
                print(f"normlight ui: no web browser found here; open {target}", flush=True)
        return proc.wait()
    return 0  # stopped by Ctrl-C or SIGTERM
