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
    span_seconds: float | None = None  # first member run's start to the last one's end (from the store)


def collect(sweeps: list[Sweep], uri: str) -> Collected:
    """The RunRecords of every planned grid point that has a run (finished, failed or diverged) in the store."""
    out = Collected()
    spans: list[tuple[int, int]] = []
    for sweep in sweeps:
        points = plan(sweep)
        out.planned += len(points)
        found = read_points(uri, sweep.experiment, sweep.name, [p.hash for p in points])
        for p in points:
            rec = found.get(p.hash)
            if rec is None or rec["status"] == "RUNNING":
                out.missing.append(p.name)
                continue
            if rec.get("start_ms") and rec.get("end_ms"):
                spans.append((rec["start_ms"], rec["end_ms"]))
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
    if spans:
        out.span_seconds = (max(e for _, e in spans) - min(b for b, _ in spans)) / 1000.0
    return out
