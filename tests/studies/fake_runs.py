"""Synthetic RunRecords for the verdict tests of the studies (no training, no MLflow)."""

from __future__ import annotations

import itertools

from normlight.studies.base import RunRecord

_ids = itertools.count()


def run(
    sweep: str,
    labels: dict,
    final: dict,
    history: dict | None = None,
    *,
    diverged=False,
    status="FINISHED",
    overrides: dict | None = None,
) -> RunRecord:
    """One synthetic record; ``history`` maps metric -> [(step, value), ...]."""
    return RunRecord(
        run_id=f"r{next(_ids)}",
        sweep=sweep,
        labels=dict(labels),
        overrides=dict(overrides or {}),
        status=status,
        diverged=diverged,
        final=dict(final),
        history={k: list(v) for k, v in (history or {}).items()},
        params={},
    )


def flat(value: float, steps=(100, 200, 300, 400)) -> list[tuple[int, float]]:
    """A metric history that stays at ``value``."""
    return [(s, value) for s in steps]
