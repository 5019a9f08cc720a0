"""The same sweep against an MLflow tracking server (started with `normlight ui`) instead of a sqlite file, given a
tracking URI with credentials: the password is written nowhere (output, logs, config, params, tags, store)."""

import os
import shutil
from pathlib import Path

from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.cli import sweep as sweep_cli
from normlight.cli import train
from tests.sweep.helpers import ROOT, reduced_sweep


def test_sweep_runs_unchanged_against_a_tracking_server(
    tmp_path, empty_store_file, monkeypatch, capsys, start_mlflow_server
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"):
        monkeypatch.setenv(var, "")  # restored (removed) after the test: normlight moves the credentials there
        monkeypatch.delenv(var)
    shutil.copy(empty_store_file, tmp_path / "server.db")
    base, _ = start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path)
    path = reduced_sweep(
        ROOT / "configs" / "sweeps" / "placement_lr.yaml",
        tmp_path,
        grid={"model.placement": ["pre"], "model.lr": [1.0e-3]},
        fixed={"data.init_args.block_size": 32, "data.init_args.batch_size": 4},
        name="server-sweep",
    )
    s = sw.load_sweep(path)
    secret = "s3cret-Pa55"
    with_credentials = base.replace("http://", f"http://alice:{secret}@")
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", with_credentials]) == 0
    printed = capsys.readouterr()
    client = MlflowClient(base)
    exp = client.get_experiment_by_name(s.experiment)
    everything = client.search_runs([exp.experiment_id])
    runs = [r for r in everything if "sweep_hash" in r.data.tags]  # the grid points (not the sweep's parent run)
    assert (
        len(everything) == 2 and [r.info.status for r in runs] == ["FINISHED"] and runs[0].data.tags["sweep"] == s.name
    )
    assert "train/loss" in runs[0].data.metrics
    # the credentials went to MLflow's own variables, so the training processes got a URI without them
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == secret
    logs = list((tmp_path / "runs" / "sweeps").rglob("*.log"))
    assert logs and all("View run" in f.read_text() for f in logs)  # MLflow's own line, now without userinfo

    # a direct `normlight fit` given the same URI: its config artifact and printed lines show *** instead
    fit = ["fit", "--config", str(s.base), "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"]
    fit += [
        "--trainer.val_check_interval",
        "2",
        "--data.init_args.block_size",
        "32",
        "--data.init_args.batch_size",
        "4",
    ]
    fit += ["--trainer.logger.init_args.experiment_name", "direct", "--trainer.logger.init_args.tracking_uri"]
    assert train.main([*fit, with_credentials]) == 0
    direct = client.search_runs([client.get_experiment_by_name("direct").experiment_id])[0]
    config = client.download_artifacts(direct.info.run_id, "config.yaml", str(tmp_path))
    assert "http://***@127.0.0.1" in Path(config).read_text()
    shown = capsys.readouterr()
    # the lines that name the store: the one-line result (with its UI link) and where the run is recorded
    assert "finished at step" in shown.out and "normlight: recorded in http://" in shown.out

    # nowhere: not in any output, log, param, tag, config or other artifact, not in the store itself
    texts = [printed.out, printed.err, shown.out, shown.err, *(f.read_text() for f in logs)]
    assert all(secret not in t for t in texts)
    stored = [tmp_path / "server.db", *(tmp_path / "mlartifacts").rglob("*")]
    assert all(secret.encode() not in f.read_bytes() for f in stored if f.is_file())
    # resuming against the server skips the finished run instead of repeating it
    capsys.readouterr()
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", base]) == 0
    assert "1 finished (skipped)" in capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id])) == 2  # the grid point and the sweep's parent run, no new ones
