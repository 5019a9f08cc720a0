"""The MLflow side of studies: read a study's grid-point runs back, and record the ``study/<name>`` run.

A study's runs live in one experiment per study and scale (``study-<name>-<scale>``), written by the sweep
machinery (tags ``sweep`` and ``sweep_hash``). :func:`read_points` returns, per planned grid point, the
newest FINISHED run of that point (else the newest attempt), with its final metrics, metric histories, params
and the ``diverged`` tag, as plain dicts (the studies layer turns them into ``RunRecord`` objects).
:func:`log_study_run` records the study's own run: verdict as tag, member run ids as tags, the report folder
and the measurements as artifacts.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Mapping

from normlight.tracking import mlflow_utils  # noqa: F401 - installs the store-relative artifact repository
from normlight.tracking.store import sqlite_path
from normlight.tracking.sweep_runs import HASH_TAG, SWEEP_TAG, client, ensure_experiment, sweep_runs

STUDY_TAG = "normlight.study"
VERDICT_TAG = "verdict"
MEMBERS_TAG = "members"
_TAG_LIMIT = 4900  # MLflow tag values are limited to 5000 characters: long member lists are split


def _open(uri: str, create: bool):
    if not create and (path := sqlite_path(uri)) is not None and not path.is_file():
        return None  # reading never creates a store
    return client(uri)


def read_points(uri: str, experiment: str, sweep: str, hashes: list[str]) -> dict[str, dict]:
    """Per config hash of ``hashes`` with a recorded run: the run's fields (see module docstring); others absent."""
    c = _open(uri, create=False)
    exp = None if c is None else c.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    wanted = set(hashes)
    best: dict[str, object] = {}
    for r in sweep_runs(c, exp.experiment_id, sweep):
        h = r.data.tags.get(HASH_TAG)
        if h not in wanted:
            continue
        old = best.get(h)
        rank = (r.info.status == "FINISHED", r.info.start_time or 0)
        if old is None or rank > (old.info.status == "FINISHED", old.info.start_time or 0):
            best[h] = r
    out = {}
    for h, r in best.items():
        history = {}
        for key in r.data.metrics:
            points = c.get_metric_history(r.info.run_id, key)
            history[key] = sorted((int(m.step), float(m.value)) for m in points)
        out[h] = {
            "run_id": r.info.run_id,
            "status": r.info.status,
            "diverged": r.data.tags.get("diverged") == "true",
            "final": {k: float(v) for k, v in r.data.metrics.items()},
            "history": history,
            "params": dict(r.data.params),
            "sweep": r.data.tags.get(SWEEP_TAG, sweep),
        }
    return out


def log_study_run(
    uri: str,
    experiment: str,
    name: str,
    *,
    tags: Mapping[str, str],
    members: list[str],
    metrics: Mapping[str, float],
    report_dir: str | Path,
    extra: Mapping,
) -> str:
    """Create the FINISHED ``study/<name>`` run in ``experiment``: ``tags`` (verdict, scale, ...), the member run
    ids as ``members`` tags, finite ``metrics``, the report folder and ``measurements.json`` as artifacts."""
    c = _open(uri, create=True)
    exp_id = ensure_experiment(c, experiment, uri)
    joined = ",".join(members)
    chunks = [joined[i : i + _TAG_LIMIT] for i in range(0, len(joined), _TAG_LIMIT)] or [""]
    member_tags = {MEMBERS_TAG: chunks[0]} | {f"{MEMBERS_TAG}.{i}": ch for i, ch in enumerate(chunks[1:], 1)}
    all_tags = {STUDY_TAG: name, **{k: str(v)[:_TAG_LIMIT] for k, v in tags.items()}, **member_tags}
    run_id = c.create_run(exp_id, run_name=f"study/{name}", tags=all_tags).info.run_id
    try:
        for key, value in metrics.items():
            if value is not None and value == value and abs(value) != float("inf"):
                c.log_metric(run_id, re.sub(r"[^A-Za-z0-9_\-. :/]", "_", key)[:250], float(value))
        c.log_artifacts(run_id, str(report_dir), "report")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "measurements.json"
            path.write_text(json.dumps(extra, indent=2, default=str))
            c.log_artifact(run_id, str(path))
        c.set_terminated(run_id, "FINISHED")
    except BaseException:
        c.set_terminated(run_id, "FAILED")
        raise
    return run_id


def study_runs(uri: str, experiment: str, name: str) -> list[dict]:
    """The recorded ``study/<name>`` runs of ``experiment``, newest first: run id, verdict tag, members."""
    c = _open(uri, create=False)
    exp = None if c is None else c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    found = c.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{name}'", order_by=["attributes.start_time DESC"]
    )
    out = []
    for r in found:
        t = r.data.tags
        parts = [t.get(MEMBERS_TAG, "")] + [t[f"{MEMBERS_TAG}.{i}"] for i in range(1, 100) if f"{MEMBERS_TAG}.{i}" in t]
        out.append(
            {
                "run_id": r.info.run_id,
                "verdict": t.get(VERDICT_TAG),
                "members": [m for m in "".join(parts).split(",") if m],
            }
        )
    return out
