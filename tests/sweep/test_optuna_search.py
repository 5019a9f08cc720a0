"""`normlight sweep --search optuna`: the space from the grid, the storage beside the tracking store, one error line
without the extra; (slow) two drivers cooperating on one study, and a diverging run pruned by the Lightning
callback while it trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.cli import sweep as sweep_cli
from normlight.sweep import optuna_search
from normlight.sweep.optuna_pruning import PRUNED_ATTR
from normlight.tracking import sweep_runs
from tests.sweep.helpers import ROOT, reduced_sweep

optuna = pytest.importorskip("optuna", reason="the optuna extra is not installed (pip install 'normlight[optuna]')")
SWEEPS = ROOT / "configs" / "sweeps"
SMALL = {"data.init_args.block_size": 32, "data.init_args.batch_size": 4}


def test_space_storage_and_suggestions(tmp_path):
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml", tmp_path, grid={"model.lr": [1.0e-3, 1.0e-1], "model.placement": ["pre", "post"]}
    )
    s = sw.load_sweep(path)
    dims = optuna_search.space(s, "model.lr")
    assert dims == {"model.lr": ("log", 1e-3, 1e-1), "model.placement": ("choice", ["pre", "post"], ["pre", "post"])}
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(20):
        point = optuna_search.suggest(study.ask(), dims)
        assert 1e-3 <= point["model.lr"] <= 1e-1 and point["model.placement"] in ("pre", "post")
    assert optuna_search.storage_url("sqlite:////x/y/mlflow.db") == "sqlite:////x/y/mlflow.optuna.db"
    pg = optuna_search.storage_url("postgresql://u@h:5432/mlflow")
    assert pg == "postgresql+psycopg2://u@h:5432/mlflow?options=-csearch_path%3Doptuna"  # same database, own schema
    with pytest.raises(sw.SweepError, match="--optuna-storage"):
        optuna_search.storage_url("http://***@server:5000")
    assert optuna_search.storage_url("http://server:5000", "postgresql://db/o") == "postgresql://db/o"


def test_missing_optuna_is_one_error_line(tmp_path, store, monkeypatch, capsys):
    path = reduced_sweep(SWEEPS / "placement_lr.yaml", tmp_path, grid={"model.lr": [1.0e-3, 1.0e-1]})
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", store, "--search", "optuna"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --search optuna needs the 'optuna' package: pip install 'normlight[optuna]'"
    )


@pytest.mark.slow
def test_two_drivers_cooperate_on_one_study(tmp_path, store, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml", tmp_path, grid={"model.lr": [1.0e-4, 3.0e-3]}, fixed=SMALL, name="tpe"
    )
    s = sw.load_sweep(path)
    argv = ["sweep", str(path), "--tracking-uri", store, "--search", "optuna", "--trials", "1"]
    codes = []
    drivers = [threading.Thread(target=lambda: codes.append(sweep_cli.main(argv))) for _ in range(2)]
    for t in drivers:
        t.start()
    for t in drivers:
        t.join()
    assert codes == [0, 0], capsys.readouterr().out
    study = optuna.load_study(study_name=f"normlight/{s.name}", storage=optuna_search.storage_url(store))
    assert sorted(t.number for t in study.trials) == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.intermediate_values for t in study.trials)
    c = MlflowClient(store)
    runs = sweep_runs.sweep_runs(c, c.get_experiment_by_name(s.experiment).experiment_id, s.name)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    # one run per trial (or one for both, when both trials suggested the same point), each trial's value its run's
    assert 1 <= len(finished) <= 2 and {r.data.tags["optuna_trial"] for r in finished} <= {"0", "1"}
    values = [r.data.metrics["val/loss"] for r in finished]
    assert all(any(t.value == pytest.approx(v) for v in values) for t in study.trials)


@pytest.mark.slow
def test_a_diverging_trial_is_pruned_by_the_lightning_callback(tmp_path, monkeypatch):
    """A real `normlight fit` at lr 1e30 with the callback: it stops at the first non-finite loss and marks the trial."""
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="div", storage=storage)
    trial = study.ask()
    callback = {"class_path": "normlight.sweep.optuna_pruning.OptunaPruning"}
    callback["init_args"] = {"storage": storage, "study_name": "div", "trial_number": trial.number}
    cmd = [sys.executable, "-m", "normlight", "fit", "--config", str(ROOT / "configs" / "gpt" / "nano.yaml")]
    cmd += ["--model.lr", "1e30", "--trainer.max_steps", "50", "--trainer.val_check_interval", "10"]
    cmd += ["--trainer.limit_val_batches", "1", "--trainer.enable_checkpointing", "false"]
    cmd += ["--data.init_args.block_size", "32", "--data.init_args.batch_size", "4"]
    cmd += ["--trainer.logger.init_args.tracking_uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    cmd += ["--trainer.callbacks+=" + json.dumps(callback)]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    attrs = optuna.load_study(study_name="div", storage=storage).trials[0].user_attrs
    assert attrs["pruned_because"] == "diverged" and attrs[PRUNED_ATTR] < 50
