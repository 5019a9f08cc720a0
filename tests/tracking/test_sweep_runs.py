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


def _wait_for(cond, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_release_records_status_note_tail_and_log(fresh_store, tmp_path):
    c = MlflowClient(fresh_store)
    exp = c.create_experiment("release", artifact_location=(tmp_path / "artifacts").as_uri())
    log = tmp_path / "point.log"
    log.write_text("epoch 1 loss nan\n")
    failed = sweep_runs.create_run(c, exp, "p", _tags("p1"))
    assert sweep_runs.run_status(c, failed) == "RUNNING"
    sweep_runs.release(c, failed, "FAILED", note="x" * 10 + "y" * 4000, log_file=str(log))
    run = c.get_run(failed)
    assert sweep_runs.run_status(c, failed) == run.info.status == "FAILED"
    assert run.data.tags["sweep_error"] == "y" * 4000  # the tail of a long error, where the exception is
    assert [a.path for a in c.list_artifacts(failed, "sweep")] == ["sweep/point.log"]

    quiet = sweep_runs.create_run(c, exp, "p", _tags("p2"))
    sweep_runs.terminate(c, quiet, "FINISHED", log_file=str(tmp_path / "missing.log"))  # the earlier name
    run = c.get_run(quiet)
    assert run.info.status == "FINISHED" and "sweep_error" not in run.data.tags
    assert c.list_artifacts(quiet) == []

    # artifacts served by a tracking server that is not there: the log cannot be stored, the status still is
    served = sweep_runs.ensure_experiment(c, "served", fresh_store)
    orphan = sweep_runs.create_run(c, served, "p", _tags("p3"))
    sweep_runs.release(c, orphan, "KILLED", log_file=str(log))
    assert sweep_runs.run_status(c, orphan) == "KILLED"


def test_mark_killed_closes_only_running_records(fresh_store):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "killed", fresh_store)
    left, done = sweep_runs.create_run(c, exp, "a", _tags("a")), sweep_runs.create_run(c, exp, "b", _tags("b"))
    c.set_terminated(done, "FINISHED")
    sweep_runs.mark_killed(c, [left, done])
    assert [sweep_runs.run_status(c, r) for r in (left, done)] == ["KILLED", "FINISHED"]


def test_is_live_needs_running_status_and_a_recent_numeric_heartbeat(fresh_store):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "live", fresh_store)
    rid = sweep_runs.create_run(c, exp, "p", {**_tags("p"), sweep_runs.HEARTBEAT_TAG: "100.0"})
    run = c.get_run(rid)
    assert sweep_runs.is_live(run, now=150.0, stale_after=50.0)  # exactly stale_after old: still live
    assert not sweep_runs.is_live(run, now=150.5, stale_after=50.0)
    assert sweep_runs.is_live(run, now=100.0 + sweep_runs.STALE_AFTER)  # the default window
    assert not sweep_runs.is_live(run, now=100.5 + sweep_runs.STALE_AFTER)
    c.set_tag(rid, sweep_runs.HEARTBEAT_TAG, "not a time")
    assert not sweep_runs.is_live(c.get_run(rid), now=100.0)
    c.set_tag(rid, sweep_runs.HEARTBEAT_TAG, "100.0")
    c.set_terminated(rid, "FINISHED")
    assert not sweep_runs.is_live(c.get_run(rid), now=100.0)


def test_heartbeats_refresh_held_claims_and_report_a_takeover(fresh_store):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "beats", fresh_store)
    owner = sweep_runs.new_owner()
    held, _ = sweep_runs.claim(c, exp, "p", _tags("held"), owner)
    dropped, _ = sweep_runs.claim(c, exp, "p", _tags("dropped"), owner)
    for rid in (held, dropped):
        c.set_tag(rid, sweep_runs.HEARTBEAT_TAG, "1.000")
    lost: list[str] = []
    beats = sweep_runs.Heartbeats(c, owner, lost.append, every=0.05)
    try:
        beats.add(held)
        beats.add(dropped)
        beats.discard(dropped)
        assert _wait_for(lambda: float(c.get_run(held).data.tags[sweep_runs.HEARTBEAT_TAG]) > time.time() - 60)
        c.set_tag(held, sweep_runs.TAKEN_OVER_TAG, "another driver")
        assert _wait_for(lambda: lost == [held])
        assert c.get_run(dropped).data.tags[sweep_runs.HEARTBEAT_TAG] == "1.000"  # discarded: never refreshed
    finally:
        beats.stop()
    beats._thread.join(timeout=10)
    assert not beats._thread.is_alive() and lost == [held]  # reported once, then no longer refreshed


def test_owner_names_host_process_and_a_random_part():
    import os
    import socket

    a, b = sweep_runs.new_owner(), sweep_runs.new_owner()
    host, pid, tail = a.split(":")
    assert (host, pid) == (socket.gethostname(), str(os.getpid())) and len(tail) == 8 and a != b


def test_heartbeat_refuses_a_claim_of_another_owner(fresh_store):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "owners", fresh_store)
    a, b = sweep_runs.new_owner(), sweep_runs.new_owner()
    rid, _ = sweep_runs.claim(c, exp, "p", _tags("p"), a)
    c.set_tag(rid, sweep_runs.HEARTBEAT_TAG, "1.000")
    assert not sweep_runs.heartbeat(c, rid, b)
    assert c.get_run(rid).data.tags[sweep_runs.HEARTBEAT_TAG] == "1.000"  # b's beat changed nothing
    assert sweep_runs.heartbeat(c, rid, a)
    assert abs(float(c.get_run(rid).data.tags[sweep_runs.HEARTBEAT_TAG]) - time.time()) < 60


class _RivalClient(MlflowClient):
    """A real client on the store; right after the claim's first look at the point, another driver records a run
    of it (what two drivers racing on one point do), so the claim sees a rival when it looks again."""

    def __init__(self, uri: str, rival: dict, status: str | None):
        super().__init__(uri)
        self.rival, self.status, self.looks = rival, status, 0

    def search_runs(self, *args, **kwargs):
        page = super().search_runs(*args, **kwargs)
        self.looks += 1
        if self.looks == 1:
            rid = MlflowClient(self.tracking_uri).create_run(
                self.rival["exp"], run_name="rival", tags=self.rival["tags"]
            )
            if self.status:
                MlflowClient(self.tracking_uri).set_terminated(rid.info.run_id, self.status)
        return page


def test_claim_steps_back_when_a_rival_appears_and_leaves_no_record(fresh_store):
    """A live rival claim or a finished rival run seen after creating the claim: the claim is deleted and the point
    reported as taken; a stale rival (no fresh heartbeat) or a rival of another point does not count."""
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "rivals", fresh_store)
    me = sweep_runs.new_owner()
    live = {sweep_runs.OWNER_TAG: "other", sweep_runs.HEARTBEAT_TAG: f"{time.time():.3f}"}
    stale = {sweep_runs.OWNER_TAG: "other", sweep_runs.HEARTBEAT_TAG: "1.000"}
    for point, extra, status, expected in (
        ("live", live, None, "running"),
        ("finished", {}, "FINISHED", "finished"),
        ("stale", stale, None, "claimed"),
    ):
        racing = _RivalClient(fresh_store, {"exp": exp, "tags": {**_tags(point), **extra}}, status)
        got, why = sweep_runs.claim(racing, exp, "p", _tags(point), me, attempts=2)
        assert why == expected, point
        runs = sweep_runs.point_runs(c, exp, "s", point)
        mine = [r for r in runs if r.data.tags.get(sweep_runs.OWNER_TAG) == me]
        if expected == "claimed":
            assert [r.info.run_id for r in mine] == [got] and mine[0].info.status == "RUNNING"
        else:
            assert got is None and mine == []  # stepped back: the deleted claim is no active record
            assert [r.info.run_name for r in runs] == ["rival"]
    # one attempt only: the step back ends the claim as "running"
    racing = _RivalClient(fresh_store, {"exp": exp, "tags": {**_tags("once"), **live}}, None)
    assert sweep_runs.claim(racing, exp, "p", _tags("once"), me, attempts=1) == (None, "running")
    # a rival of another point is not in this point's runs
    racing = _RivalClient(fresh_store, {"exp": exp, "tags": {**_tags("elsewhere"), **live}}, None)
    assert sweep_runs.claim(racing, exp, "p", _tags("here"), me, attempts=1)[1] == "claimed"


def test_mark_stale_goes_on_past_a_record_another_driver_removed(fresh_store):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "stale", fresh_store)
    first, second = (sweep_runs.create_run(c, exp, "p", _tags("p")) for _ in range(2))
    runs = sorted(sweep_runs.point_runs(c, exp, "s", "p"), key=lambda r: r.info.run_id != first)
    c.delete_run(first)  # gone before this driver closes it: its tag write fails
    sweep_runs._mark_stale(c, runs, "me", sweep_runs.STALE_AFTER)
    run = c.get_run(second)
    assert run.info.status == "KILLED" and run.data.tags[sweep_runs.TAKEN_OVER_TAG] == "me"


def test_heartbeats_thread_is_a_daemon_and_outlives_a_store_error(fresh_store):
    """A claim whose run cannot be read (an unreachable store, here a run id the store does not know) is retried at
    the next beat; the others are still refreshed; the thread never keeps a finished driver alive."""
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "errors", fresh_store)
    owner = sweep_runs.new_owner()
    held, _ = sweep_runs.claim(c, exp, "p", _tags("held"), owner)
    c.set_tag(held, sweep_runs.HEARTBEAT_TAG, "1.000")
    lost: list[str] = []
    beats = sweep_runs.Heartbeats(c, owner, lost.append, every=0.05)
    try:
        assert beats._thread.daemon and beats.every == 0.05
        beats.add("0" * 32)  # sorted first: refreshed (and failing) before the held claim at every beat
        beats.add(held)
        assert _wait_for(lambda: float(c.get_run(held).data.tags[sweep_runs.HEARTBEAT_TAG]) > time.time() - 60)
        assert lost == []
    finally:
        beats.stop()
    beats._thread.join(timeout=10)
    default = sweep_runs.Heartbeats(c, owner, lost.append)
    default.stop()
    assert default.every == sweep_runs.HEARTBEAT_EVERY


def test_client_opens_the_store_it_is_given(fresh_store, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert sweep_runs.client(fresh_store).tracking_uri == fresh_store


class _PagedClient(MlflowClient):
    """A real client whose searches return pages of two runs, so every page has to be followed."""

    def search_runs(self, *args, **kwargs):
        return super().search_runs(*args, **{**kwargs, "max_results": 2})


def test_sweep_runs_follows_every_page_and_keeps_to_its_sweep(fresh_store):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "pages", fresh_store)
    ids = {sweep_runs.create_run(c, exp, f"p{i}", _tags(f"p{i}")) for i in range(5)}
    sweep_runs.create_run(c, exp, "other", {sweep_runs.SWEEP_TAG: "t", sweep_runs.HASH_TAG: "p0"})
    assert {r.info.run_id for r in sweep_runs.sweep_runs(_PagedClient(fresh_store), exp, "s")} == ids


def test_state_by_hash_gives_the_state_and_the_runs_per_status(fresh_store):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "states", fresh_store)
    done, failed, left = (sweep_runs.create_run(c, exp, "p", _tags("h")) for _ in range(3))
    c.set_terminated(done, "FINISHED")
    c.set_terminated(failed, "FAILED")
    assert sweep_runs.state_by_hash(sweep_runs.sweep_runs(c, exp, "s")) == {
        "h": {"state": sweep_runs.DONE, "finished": [done], "failed": [failed], "interrupted": [(left, "RUNNING")]}
    }


def test_a_stale_claim_is_judged_by_the_given_stale_after_and_taken_over_by_name(fresh_store):
    # a heartbeat 10 s old is stale for stale_after=5 (the default, 90 s, would call it live)
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "stale", fresh_store)
    me = sweep_runs.new_owner()
    old = sweep_runs.create_run(
        c,
        exp,
        "old-name",
        {**_tags("p"), sweep_runs.OWNER_TAG: "gone", sweep_runs.HEARTBEAT_TAG: f"{time.time() - 10:.3f}"},
    )
    assert c.get_run(old).info.run_name == "old-name"
    got, why = sweep_runs.claim(c, exp, "new-name", _tags("p"), me, stale_after=5)
    assert why == "claimed" and c.get_run(got).info.run_name == "new-name"
    old_run = c.get_run(old)
    assert old_run.info.status == "KILLED" and old_run.data.tags[sweep_runs.TAKEN_OVER_TAG] == me
    # a rival recorded meanwhile with a heartbeat older than stale_after is no rival either
    rival = {**_tags("q"), sweep_runs.OWNER_TAG: "other", sweep_runs.HEARTBEAT_TAG: f"{time.time() - 10:.3f}"}
    racing = _RivalClient(fresh_store, {"exp": exp, "tags": rival}, None)
    assert sweep_runs.claim(racing, exp, "p", _tags("q"), me, stale_after=5, attempts=1)[1] == "claimed"


def test_taken_ignores_the_owners_own_live_claim_only(fresh_store):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "taken", fresh_store)
    me = sweep_runs.new_owner()
    mine, _ = sweep_runs.claim(c, exp, "p", _tags("p"), me)
    runs = sweep_runs.point_runs(c, exp, "s", "p")
    assert sweep_runs._taken(runs, me, False, 60.0) is None
    assert sweep_runs._taken(runs, "another driver", False, 60.0) == "running"


class _CollidingClient(MlflowClient):
    """A real client racing a twin driver that claims the same point at the same moment and steps back with it."""

    def __init__(self, uri: str):
        super().__init__(uri)
        self.creates, self.twins = 0, []

    def create_run(self, experiment_id, *args, tags=None, **kwargs):
        run = super().create_run(experiment_id, *args, tags=tags, **kwargs)
        self.creates += 1
        twin = {**tags, sweep_runs.OWNER_TAG: "twin", sweep_runs.HEARTBEAT_TAG: f"{time.time():.3f}"}
        self.twins.append(MlflowClient(self.tracking_uri).create_run(experiment_id, run_name="twin", tags=twin))
        return run

    def delete_run(self, run_id):
        super().delete_run(run_id)
        super().delete_run(self.twins.pop().info.run_id)


def test_colliding_claims_back_off_for_a_seeded_random_pause_and_give_up_after_20_attempts(fresh_store, monkeypatch):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "collide", fresh_store)
    pauses: list[float] = []
    monkeypatch.setattr(sweep_runs.time, "sleep", pauses.append)
    racing = _CollidingClient(fresh_store)
    assert sweep_runs.claim(racing, exp, "p", _tags("p"), "me") == (None, "running")
    assert racing.creates == 20 and len(pauses) == 20
    assert all(0.2 <= p <= 1.5 for p in pauses) and min(pauses) < 1.2
    # the pauses are drawn from a generator seeded by owner and point: the same driver repeats them
    first = pauses[:3]
    pauses.clear()
    assert sweep_runs.claim(_CollidingClient(fresh_store), exp, "p", _tags("p"), "me", attempts=3)[1] == "running"
    assert pauses == first


def test_heartbeats_thread_is_named_and_reports_a_lost_claim_once(fresh_store):
    c = MlflowClient(fresh_store)
    exp = sweep_runs.ensure_experiment(c, "lost", fresh_store)
    owner = sweep_runs.new_owner()
    held, _ = sweep_runs.claim(c, exp, "p", _tags("held"), owner)
    c.set_tag(held, sweep_runs.TAKEN_OVER_TAG, "another driver")
    lost: list[str] = []
    beats = sweep_runs.Heartbeats(c, owner, lost.append, every=0.02)
    try:
        assert beats._thread.name == "normlight-sweep-heartbeat"  # what a thread dump of a stuck driver shows
        beats.add(held)
        assert _wait_for(lambda: lost == [held])
        time.sleep(0.3)  # a dozen more beats: the lost claim is no longer refreshed nor reported again
    finally:
        beats.stop()
    beats._thread.join(timeout=10)
    assert lost == [held]
