"""`normlight ui` serves the project's sqlite store: REST lists the runs, `/` is the UI page, stop is clean."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path


def _group_alive(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == pgid and stat[0] != "Z":
                pids.append(int(d.name))
    return pids


def test_ui_serves_runs_and_stops_cleanly(tmp_path, start_mlflow_server):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("ui-test", artifact_location=(tmp_path / "mlartifacts").as_uri())
    run = client.create_run(exp, run_name="gpt-nano/pre/rmsnorm/lr3e-3/s0")
    client.log_metric(run.info.run_id, "val/loss", 2.5)
    client.set_terminated(run.info.run_id)

    base, proc = start_mlflow_server(uri, tmp_path)
    try:
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            method="POST",
            data=json.dumps({"experiment_ids": [exp]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=20) as r:
            runs = json.load(r)["runs"]
        assert [x["info"]["run_name"] for x in runs] == ["gpt-nano/pre/rmsnorm/lr3e-3/s0"]
        with urllib.request.urlopen(f"{base}/", timeout=20) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        # the server runs in its own process group (main + one uvicorn worker, no job runners)
        server_pgids = {
            int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[2]) for p in _children(proc.pid)
        }
        assert len(server_pgids) == 1
        (pgid,) = server_pgids
        assert 1 <= len(_group_alive(pgid)) <= 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "normlight ui: stopped" in out
    time.sleep(0.5)
    assert _group_alive(pgid) == [], "server processes left behind"


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def test_ui_without_store_is_a_clear_error(tmp_path, capsys):
    from normlight.cli import ui

    assert ui.main(["ui", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 1
    assert "no MLflow store at" in capsys.readouterr().err
