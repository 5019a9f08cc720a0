"""Helpers for the scale-out tests: every distributed case runs in its own subprocess (own ports, own state)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def run_launch(cmd: list, cwd: Path, timeout: float = 240, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one multi-process launch; on failure show the tail of its output so the cause is visible."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p))
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra_env or {})
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
                    f"\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def torchrun(script: Path, *args, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Launch ``script`` on 2 local processes with torchrun (gloo; a free rendezvous port each time)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script, *args]
    return run_launch(cmd, cwd, timeout)
