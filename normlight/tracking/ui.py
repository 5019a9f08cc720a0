"""The MLflow UI server for ``normlight ui``: its command line and a clean stop of its process group.

``normlight ui`` runs ``mlflow server`` on 127.0.0.1 with one worker and without MLflow's background job runners
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``), so the whole server is two processes and stops completely
on Ctrl-C or SIGTERM. Artifacts written beside a sqlite store (``mlartifacts/``) are served from there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from normlight.tracking.mlflow_utils import default_artifact_location


def server_command(tracking_uri: str, port: int) -> list[str]:
    """The ``mlflow server`` command line for a store URI and a port."""
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    cmd += ["server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", tracking_uri, "--workers", "1"]
    artifacts = default_artifact_location(tracking_uri)
    if artifacts:
        cmd += ["--artifacts-destination", artifacts]
    return cmd


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
