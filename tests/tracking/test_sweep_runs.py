"""Claiming grid points exactly once against a real sqlite MLflow store: the rules in one process, and the race
between real concurrent processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from mlflow import MlflowClient

from normlight.tracking import sweep_runs
from tests.helpers import ROOT


def _tags(point: str) -> dict:
    return {sweep_runs.SWEEP_TAG: "s", sweep_runs.HASH_TAG: point}


def test_claim_rules_live_stale_killed_failed_finished(fresh_store):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "claims", fresh_store)
    a, b = sweep_runs.new_owner(), sweep_runs.new_owner()

    first, why = sweep_runs.claim(c, exp, "p", _tags("p1"), a)
    assert why == "claimed" and c.get_run(first).data.tags[sweep_runs.OWNER_TAG] == a
    assert sweep_runs.claim(c, exp, "p", _tags("p1"), b) == (None, "running")  # a live claim is never replaced
    assert sweep_runs.heartbeat(c, first, a)

    c.set_tag(first, sweep_runs.HEARTBEAT_TAG, str(time.time() - 10 * sweep_runs.STALE_AFTER))  # owner died
    second, why = sweep_runs.claim(c, exp, "p", _tags("p1"), b)
    assert why == "claimed" and second != first
    assert c.get_run(first).info.status == "KILLED"
    assert not sweep_runs.heartbeat(c, first, a)  # the old owner learns it lost the point

    sweep_runs.release(c, second, "KILLED")  # an interrupted point is run again by default
    third, why = sweep_runs.claim(c, exp, "p", _tags("p1"), a)
    assert why == "claimed"
    sweep_runs.release(c, third, "FAILED")
    assert sweep_runs.claim(c, exp, "p", _tags("p1"), b) == (None, "failed")
    fourth, _ = sweep_runs.claim(c, exp, "p", _tags("p1"), b, retry_failed=True)
    sweep_runs.release(c, fourth, "FINISHED")
    assert sweep_runs.claim(c, exp, "p", _tags("p1"), a, retry_failed=True) == (None, "finished")

    legacy = sweep_runs.create_run(c, exp, "p", _tags("p2"))  # RUNNING without a heartbeat: a killed old sweep
    fifth, why = sweep_runs.claim(c, exp, "p", _tags("p2"), a)
    assert why == "claimed" and c.get_run(legacy).info.status == "KILLED"
    active = sweep_runs.sweep_runs(c, exp, "s")
    assert sorted(r.info.status for r in active) == ["FAILED", "FINISHED", "KILLED", "KILLED", "KILLED", "RUNNING"]


RACER = """
import json, os, sys, time
from pathlib import Path
from mlflow import MlflowClient
from normlight.tracking import sweep_runs
uri, gate, points = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
c = MlflowClient(uri)
exp = sweep_runs.ensure_experiment(c, "race", uri)
owner = sweep_runs.new_owner()
(gate / str(os.getpid())).touch()
while len(list(gate.iterdir())) < 3:  # every racer starts claiming at the same moment
    time.sleep(0.01)
got = {p: sweep_runs.claim(c, exp, p, {"sweep": "s", "sweep_hash": p}, owner)[0] for p in points}
print(json.dumps(got))
"""


def test_three_processes_claim_each_point_exactly_once(fresh_store, tmp_path):
    points = [f"p{i:02d}" for i in range(20)]  # all racers in the same order: they collide on every point
    (tmp_path / "gate").mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, fresh_store, str(tmp_path / "gate"), ",".join(points)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for point in points:
        winners = [r[point] for r in results if r[point]]
        assert len(winners) == 1, (point, results)
    c = MlflowClient(fresh_store)
    runs = sweep_runs.sweep_runs(c, c.get_experiment_by_name("race").experiment_id, "s")
    assert sorted(r.data.tags["sweep_hash"] for r in runs) == points  # the steps back left no active record
