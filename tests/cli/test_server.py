"""`normlight server`: the MLflow tracking server on a real PostgreSQL (started from the installed binaries in a
temp dir) with an artifact root; runs, metrics and artifacts sent through it land in the database and the folder."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from normlight.cli import server
from tests.helpers import free_port
from tests.postgres import Postgres, binaries

needs_postgres = pytest.mark.skipif(binaries() is None, reason="PostgreSQL binaries (initdb, pg_ctl) not installed")


@pytest.fixture
def postgres():
    """A PostgreSQL cluster for one test (see tests/postgres.py for how it runs as root)."""
    pytest.importorskip("psycopg2", reason="the postgres extra is not installed (pip install 'normlight[postgres]')")
    pg = Postgres()
    yield pg
    pg.stop()


def start_server(backend_uri: str, artifacts, cwd) -> tuple[str, subprocess.Popen]:
    """`normlight server` in its own process; returns (tracking URI, process) once /health answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "normlight", "server", "--backend-store-uri", backend_uri]
    cmd += ["--artifacts-destination", str(artifacts), "--port", str(port)]
    # output to a file, not a pipe: a pipe nobody reads fills up and blocks the server's request logging
    log = open(Path(cwd) / f"server-{port}.log", "w")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_path = Path(log.name)
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, proc.log_path.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return f"http://127.0.0.1:{port}", proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise AssertionError("the server never answered /health")


def stop_server(proc: subprocess.Popen) -> str:
    """SIGTERM `normlight server`; returns everything it printed."""
    proc.terminate()
    proc.wait(timeout=60)
    return proc.log_path.read_text()


@needs_postgres
def test_server_on_postgresql_stores_runs_in_the_database_and_artifacts_in_the_root(postgres, tmp_path):
    import psycopg2
    from mlflow import MlflowClient

    uri = postgres.create_database("mlflow")
    artifacts = tmp_path / "artifacts"
    base, proc = start_server(uri, artifacts, tmp_path)
    try:
        c = MlflowClient(base)
        exp = c.create_experiment("team")
        run = c.create_run(exp, run_name="r1").info.run_id
        c.log_metric(run, "train/loss", 1.5, step=3)
        (tmp_path / "config.yaml").write_text("model: {}\n")
        c.log_artifact(run, str(tmp_path / "config.yaml"))
        c.set_terminated(run, "FINISHED")
        assert [a.path for a in c.list_artifacts(run)] == ["config.yaml"]
    finally:
        out = stop_server(proc)
    # the run is a row of the PostgreSQL database, the artifact a file under the artifact root
    conn = psycopg2.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, dbname="mlflow")
    with conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run,))
        assert cur.fetchone() == ("FINISHED",)
        cur.execute("SELECT value, step FROM metrics WHERE run_uuid = %s AND key = 'train/loss'", (run,))
        assert cur.fetchall() == [(1.5, 3)]
    conn.close()
    assert [p.name for p in artifacts.rglob("config.yaml")] == ["config.yaml"]
    assert (
        "store postgresql://***@127.0.0.1:" in out
        and "normlight server: up; use --tracking-uri http://127.0.0.1:" in out
    )
    assert "normlight server: stopped" in out


def test_a_missing_database_driver_is_one_error_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if `normlight[postgres]` were not installed
    argv = ["server", "--backend-store-uri", "postgresql://u:secret@db/mlflow", "--artifacts-destination", "/tmp/a"]
    assert server.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --backend-store-uri postgresql://***@db/mlflow needs the 'psycopg2' package")
    assert err.endswith("pip install 'normlight[postgres]'") and "secret" not in err
