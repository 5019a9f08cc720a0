"""A tracking server that stops answering does not stop training: metrics are kept and retried, one warning is
printed, and everything is sent when the server answers again (real MLflow server, frozen with SIGSTOP)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from mlflow import MlflowClient

from normlight.tracking.mlflow_utils import MLFlowLogger


def _server_group(ui_pid: int) -> int:
    """The process group of the `mlflow server` that `normlight ui` (pid ``ui_pid``) started."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ui_pid:
                    return os.getpgid(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    raise AssertionError("no mlflow server under normlight ui")


def test_metrics_are_kept_while_the_server_does_not_answer(
    tmp_path, monkeypatch, capsys, empty_store_file, start_mlflow_server
):
    # MLflow's retry budget: one attempt of 2 s; the server stays silent much longer than that
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    shutil.copy(empty_store_file, tmp_path / "server.db")
    base, ui = start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path)
    lg = MLFlowLogger(experiment_name="outage", tracking_uri=base)
    for step in range(5):
        lg.log_metrics({"x": float(step)}, step=step)
    writer = lg.writer()
    assert writer.flush(timeout=120)
    writer.warn_after = 1.0

    group = _server_group(ui.pid)
    os.killpg(group, signal.SIGSTOP)
    try:
        for step in range(5, 10):  # returns at once although nothing answers
            lg.log_metrics({"x": float(step)}, step=step)
        deadline = time.time() + 60
        while writer._failing_since is None or time.time() - writer._failing_since < 8:  # several failed attempts
            assert time.time() < deadline, "the writer never saw the outage"
            time.sleep(0.2)
        lg.log_metrics({"x": 10.0}, step=10)  # the warning comes with the next point
        assert writer.pending() == 6
    finally:
        os.killpg(group, signal.SIGCONT)
    lg.finalize("success")  # waits until everything is sent

    client = MlflowClient(base)
    assert [m.value for m in client.get_metric_history(lg.run_id, "x")] == [float(s) for s in range(11)]
    assert client.get_run(lg.run_id).info.status == "FINISHED"
    out = capsys.readouterr().out
    assert out.count("is not answering") == 1 and out.count("answers again") == 1, out
