"""The MLflow UI server for ``normlight ui``: its command line and a clean stop of its process group.

``normlight ui`` runs ``mlflow server`` on 127.0.0.1 with one worker and without MLflow's background job runners
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``), so the whole server is two processes and stops completely
on Ctrl-C or SIGTERM. Artifacts written beside a sqlite store (``mlartifacts/``) are served from there.

MLflow 3.x opens an experiment in its GenAI view (traces, token usage); the links built here ask for the
model-training view (``?workflowType=machine_learning``), which shows the runs table and metric charts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from normlight.tracking.artifacts import artifacts_dir


def server_command(tracking_uri: str, port: int) -> list[str]:
    """The ``mlflow server`` command line for a store URI and a port."""
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    cmd += ["server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", tracking_uri, "--workers", "1"]
    folder = artifacts_dir(tracking_uri)
    if folder:
        cmd += ["--artifacts-destination", folder.as_uri()]
    return cmd


DEFAULT_PORT = 5000
WORKFLOW = "workflowType=machine_learning"  # MLflow's model-training view, not the GenAI one
VIEW_KEY = "normlight"  # the shared view state normlight writes on each experiment


def ui_link(
    experiment_id: str | None = None, run_id: str | None = None, port: int = DEFAULT_PORT, view: bool = False
) -> str:
    """The MLflow UI address of an experiment's runs table (or one run) in the model-training view;
    ``view`` opens the experiment's ``normlight`` view (see :mod:`normlight.tracking.presentation`)."""
    base = f"http://127.0.0.1:{port}/#/experiments"
    if experiment_id is None:
        return f"{base}?{WORKFLOW}"
    if run_id is not None:
        return f"{base}/{experiment_id}/runs/{run_id}?{WORKFLOW}"
    return f"{base}/{experiment_id}/runs?" + (f"viewStateShareKey={VIEW_KEY}&" if view else "") + WORKFLOW


def experiment_links(tracking_uri: str, port: int = DEFAULT_PORT, limit: int = 10) -> list[tuple[str, str]]:
    """(name, UI link) of the store's experiments with runs, most recently updated first (``limit`` at most)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    exps = [
        e
        for e in client.search_experiments()
        if e.name != "Default" or client.search_runs([e.experiment_id], max_results=1)
    ]
    # training experiments first (newest first), their `<name>/compare` companions after them
    exps.sort(key=lambda e: (e.name.endswith("/compare"), -(e.last_update_time or 0)))
    view = f"mlflow.sharedViewState.{VIEW_KEY}"
    return [(e.name, ui_link(e.experiment_id, port=port, view=view in e.tags)) for e in exps[:limit]]


def wait_until_up(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll the server's ``/health`` until it answers (True), the process exits or ``timeout`` passes (False)."""
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


@contextlib.contextmanager
def running_server(cmd: list[str], name: str):
    """Run a server command for the ``with`` block, in its own process group; yields the process.

    Own process group: stopping it reaches the uvicorn worker too, so nothing is left behind. MLflow's
    background job runners are off (two processes in all). SIGTERM takes the same path as Ctrl-C: the block
    ends, the exception is swallowed (stopping is the expected way out), the group is stopped and
    ``<name>: stopped`` printed.
    """
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield proc
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_group(proc)
        print(f"{name}: stopped", flush=True)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if still alive after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            os.killpg(proc.pid, 0)  # raises once every member of the group is gone
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            break
        else:
            time.sleep(1.0)  # the worker is still exiting; give it a moment before escalating
    proc.poll()
