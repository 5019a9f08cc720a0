"""``normlight sweep FILE --status``: each grid point's state from the tracking store plus the scheduler.

The store decides (it is shared by every driver and task): ``finished`` (a FINISHED run), ``failed`` (its last
run FAILED), ``running`` (a RUNNING run whose owner's heartbeat is live), ``pending`` (no run yet, or only
KILLED / abandoned ones: the next driver or task re-runs it). For a SLURM array submitted from this log folder
the scheduler's state of the point's array task is shown beside it (PENDING, RUNNING, COMPLETED, ...).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from normlight.sweep.spec import Sweep, plan
from normlight.tracking import sweep_runs
from normlight.tracking.credentials import redact

STATES = ("pending", "running", "finished", "failed")


def point_states(sweep: Sweep, uri: str) -> dict[str, str]:
    """{point hash: pending | running | finished | failed} read from the store (creates nothing)."""
    from normlight.sweep.local import _existing_state

    state = _existing_state(sweep, uri)
    if not state:
        return {r.hash: "pending" for r in plan(sweep)}
    c = sweep_runs.client(uri)
    exp = c.get_experiment_by_name(sweep.experiment)
    runs = sweep_runs.sweep_runs(c, exp.experiment_id, sweep.name)
    live = {r.data.tags.get(sweep_runs.HASH_TAG) for r in runs if sweep_runs.is_live(r)}
    out = {}
    for r in plan(sweep):
        st = state.get(r.hash, {}).get("state")
        if st == sweep_runs.DONE:
            out[r.hash] = "finished"
        elif r.hash in live:
            out[r.hash] = "running"
        elif st == sweep_runs.FAILED:
            out[r.hash] = "failed"
        else:
            out[r.hash] = "pending"
    return out


def show_status(sweep: Sweep, uri: str, log_dir: Path) -> int:
    """Print one line per point and the counts; exit code 0 (1 if a point failed)."""
    from normlight.sweep.slurm import scheduler_states

    states = point_states(sweep, uri)
    scheduler = scheduler_states(log_dir)
    print(f"[sweep] {sweep.name}: experiment {sweep.experiment!r} at {redact(uri)}")
    for r in plan(sweep):
        extra = f"  (scheduler: {scheduler[r.hash]})" if r.hash in scheduler else ""
        print(f"  {states[r.hash]:<9} {r.name} ({r.hash}){extra}")
    counts = Counter(states.values())
    print("[sweep] " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES))
    return 1 if counts.get("failed") else 0
