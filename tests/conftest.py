"""Suite-wide test settings: never reach a model hub or start MLflow job runners; a one-thread fixture."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


@pytest.fixture
def one_thread():
    """One intra-op thread for tests on tiny tensors: thread hand-offs (and OpenMP spin-waiting when
    processes share the 2 cores) cost far more than they save at these sizes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def start_mlflow_server():
    """Start the real MLflow server through `normlight ui` and wait until it answers ``/health``.

    Call ``start(tracking_uri, cwd)``; it returns ``(base_url, process)``. Servers still running at the
    end of the test get SIGTERM (a test may stop its server itself to check the shutdown).
    """
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    procs = []

    def start(tracking_uri: str, cwd) -> tuple[str, subprocess.Popen]:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        proc = subprocess.Popen([sys.executable, "-m", "normlight.cli", "ui", "--port", str(port), "--tracking-uri", tracking_uri],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 150
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        return base, proc
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "the MLflow server did not come up"
            time.sleep(0.5)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
