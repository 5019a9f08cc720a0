"""Suite-wide test settings (never reach a model hub or start MLflow job runners) and shared fixtures: one thread,
a real MLflow server, and the fixture plugin distributions installed into a temporary target.

The fixture distributions are installed with pip (real dist-info, real entry points) into a tmp dir rather than
the project venv, so the rest of the suite, which parametrizes over installed norms, never sees them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normlight import plugins
from tests.helpers import free_port

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


@pytest.fixture
def start_mlflow_server():
    """Start the real MLflow server through `normlight ui` and wait until it answers ``/health``.

    Call ``start(tracking_uri, cwd, *extra_args, env_extra=None)``; it returns ``(base_url, process)``. Servers still running at the
    end of the test get SIGTERM (a test may stop its server itself to check the shutdown).
    """
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request

    class ServerProcess(subprocess.Popen):
        """The server's output goes to a file: a pipe read only at the end blocks the server once 64 KiB of its
        request log pile up. ``communicate`` waits and returns that output, as it would from a pipe."""

        def __init__(self, args, **kwargs):
            self.log = tempfile.TemporaryFile("w+")
            super().__init__(args, stdout=self.log, stderr=subprocess.STDOUT, text=True, **kwargs)

        def output(self) -> str:
            """Everything the server printed so far."""
            self.log.seek(0)
            return self.log.read()

        def communicate(self, input=None, timeout=None):
            self.wait(timeout)
            return self.output(), None

    procs = []

    def start(tracking_uri: str, cwd, *extra: str, env_extra: dict | None = None) -> tuple[str, subprocess.Popen]:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(env_extra or {})
        proc = ServerProcess(
            [sys.executable, "-m", "normlight", "ui", "--port", str(port), "--tracking-uri", tracking_uri, *extra],
            env=env,
            cwd=cwd,
        )
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
            assert proc.poll() is None, proc.output()
            assert time.time() < deadline, "the MLflow server did not come up"
            time.sleep(0.5)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)


@pytest.fixture(scope="session")
def empty_store_file() -> Path:
    """An initialized, empty MLflow sqlite file (creating the schema takes seconds; copying it does not).

    Kept in the temp dir per MLflow version and user, so later sessions reuse it: mutation testing starts one
    session per mutant. Tests only copy it; a new one is written beside it and renamed into place.
    """
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    path = Path(tempfile.gettempdir()) / f"normlight-empty-mlflow-{mlflow.__version__}-{os.getuid()}.db"
    if not path.exists():
        part = path.with_name(f"{path.name}.{os.getpid()}.part")
        MlflowClient(f"sqlite:///{part}").search_experiments()
        os.replace(part, path)
    return path


@pytest.fixture
def fresh_store(tmp_path, empty_store_file) -> str:
    """URI of a new, empty sqlite MLflow store in tmp_path (copied from the template)."""
    import shutil

    shutil.copy(empty_store_file, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixture_site(tmp_path_factory) -> Path:
    """A directory holding the installed fixture distributions (add it to sys.path or PYTHONPATH)."""
    target = tmp_path_factory.mktemp("fixture_site")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(target),
        str(FIXTURES / "normlight-fixture-plugins"),
        str(FIXTURES / "normlight-fixture-dup"),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return target


@pytest.fixture
def with_fixture_plugins(fixture_site, monkeypatch):
    """Make the fixture distributions visible to this interpreter for one test."""
    monkeypatch.syspath_prepend(str(fixture_site))
    plugins.refresh()
    yield fixture_site
    monkeypatch.undo()
    plugins.refresh()
    for mod in [m for m in sys.modules if m.startswith("nl_fixture")]:
        del sys.modules[mod]
