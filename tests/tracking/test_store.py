"""A NEW sqlite store opened by several processes at the same moment: created once (under a file lock), every
process gets its run and its points; the experiment is created once too."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from tests.cli.helpers import NANO
from tests.helpers import ROOT

# what normlight's MLFlowLogger does when it starts (prepare_store in __init__, ensure_experiment on first use),
# without importing Lightning (the slow test below runs four real fits)
WORKER = """
import os, sys, time
from pathlib import Path
from mlflow import MlflowClient
from normlight.tracking.store import ensure_experiment, prepare_store
uri, gate = sys.argv[1], Path(sys.argv[2])
(gate / str(os.getpid())).touch()
while len(list(gate.iterdir())) < int(sys.argv[3]):  # all open the new store at the same moment
    time.sleep(0.01)
prepare_store(uri)
client = MlflowClient(uri)
run = client.create_run(ensure_experiment(client, "race", uri)).info.run_id
for step in range(3):
    client.log_metric(run, "x", float(step), step=step)
client.set_terminated(run)
"""


def test_four_processes_open_a_new_store_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"  # neither the folder nor the file exists yet
    (tmp_path / "gate").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, uri, str(tmp_path / "gate"), "4"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(o[-1500:] for o in outs)
    client = MlflowClient(uri)
    (exp,) = [e for e in client.search_experiments() if e.name == "race"]
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "x")] == [0, 1, 2]


@pytest.mark.slow
def test_four_fits_on_a_new_store_all_finish_with_all_points(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": uri}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "normlight", "fit", *NANO, "--trainer.max_steps", "4"]
            + ["--trainer.val_check_interval", "2", "--seed_everything", str(seed)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in range(4)
    ]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(o[-1500:] for o in outs)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("normlight").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "train/loss")] == [0, 1, 2, 3]
