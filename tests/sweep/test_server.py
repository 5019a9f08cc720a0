"""The same sweep against an MLflow tracking server (started with `normlight ui`) instead of a sqlite file."""

import shutil

from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.cli import sweep as sweep_cli
from tests.sweep.helpers import ROOT, reduced_sweep


def test_sweep_runs_unchanged_against_a_tracking_server(
    tmp_path, empty_store_file, monkeypatch, capsys, start_mlflow_server
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
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
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", base]) == 0
    client = MlflowClient(base)
    exp = client.get_experiment_by_name(s.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"] and runs[0].data.tags["sweep"] == s.name
    assert "train/loss" in runs[0].data.metrics
    # resuming against the server skips the finished run instead of repeating it
    capsys.readouterr()
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", base]) == 0
    assert "1 finished (skipped)" in capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id])) == 1
