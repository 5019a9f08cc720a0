"""A study's runs read back from the store as RunRecords, one per planned grid point (see tracking/studies.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from normlight.studies.base import RunRecord, Study
from normlight.sweep.spec import Sweep, plan
from normlight.tracking.studies import read_points


def experiment_name(study: Study, scale: str) -> str:
    """The MLflow experiment of a study at one scale: ``study-<name>-<scale>``."""
    return f"study-{study.name}-{scale}"


@dataclass
class Collected:
    """What the store holds for a study's planned grid points."""

    runs: list[RunRecord] = field(default_factory=list)
    planned: int = 0
    missing: list[str] = field(default_factory=list)  # run names of planned points with no run yet


def collect(sweeps: list[Sweep], uri: str) -> Collected:
    """The RunRecords of every planned grid point that has a run (finished, failed or diverged) in the store."""
    out = Collected()
    for sweep in sweeps:
        points = plan(sweep)
        out.planned += len(points)
        found = read_points(uri, sweep.experiment, sweep.name, [p.hash for p in points])
        for p in points:
            rec = found.get(p.hash)
            if rec is None or rec["status"] == "RUNNING":
                out.missing.append(p.name)
                continue
            labels = dict(p.labels)
            labels["seed"] = p.overrides.get("seed_everything", labels.get("seed_everything"))
            out.runs.append(
                RunRecord(
                    run_id=rec["run_id"],
                    sweep=sweep.name,
                    labels=labels,
                    overrides=dict(p.overrides),
                    status=rec["status"],
                    diverged=rec["diverged"],
                    final=rec["final"],
                    history=rec["history"],
                    params=rec["params"],
                )
            )
    return out
