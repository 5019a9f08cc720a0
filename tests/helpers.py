"""Helpers shared by the test folders: the repository root, a free port, and multi-process launches.

Every distributed case runs in its own subprocess (own ports, own state).
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_launch(
    cmd: list, cwd: Path, timeout: float = 240, extra_env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run one multi-process launch; on failure show the tail of its output so the cause is visible."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra_env or {})
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
            f"\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def torchrun(script: Path, *args, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Launch ``script`` on 2 local processes with torchrun (gloo; a free rendezvous port each time)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *args]
    return run_launch(cmd, cwd, timeout)
