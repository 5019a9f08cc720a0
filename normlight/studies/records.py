"""Small helpers studies use to slice their :class:`RunRecord` lists (numbers in, numbers out; no I/O)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from normlight.studies.base import RunRecord
from normlight.studies.verdict import mean_std


def select(runs: Iterable[RunRecord], sweep: str | None = None, **labels) -> list[RunRecord]:
    """The runs of ``sweep`` (any if None) whose labels equal every ``labels`` item (keys with ``.`` as ``__``)."""
    want = {k.replace("__", "."): v for k, v in labels.items()}
    return [
        r for r in runs if (sweep is None or r.sweep == sweep) and all(_eq(r.labels.get(k), v) for k, v in want.items())
    ]


def _eq(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b


def finals(runs: Iterable[RunRecord], metric: str) -> list[float]:
    """The final value of ``metric`` of each run that logged it (non-finite values kept: they are results)."""
    return [r.final[metric] for r in runs if metric in r.final]


def stable(run: RunRecord, metric: str = "val/loss", limit: float | None = None) -> bool:
    """A run that finished without diverging and whose final ``metric`` is finite (and <= ``limit`` if given)."""
    v = run.final.get(metric)
    if run.status != "FINISHED" or run.diverged or v is None or not math.isfinite(v):
        return False
    return limit is None or v <= limit


def pm(values: Iterable[float], digits: int = 3) -> str:
    """``"mean ± std (n=k)"`` of the values, or ``"—"`` for none."""
    xs = list(values)
    if not xs:
        return "—"
    m, s = mean_std(xs)
    return f"{m:.{digits}g} ± {s:.2g} (n={len(xs)})"


def at_step(history: list[tuple[int, float]], step: int | None = None) -> float | None:
    """The value logged at ``step`` (the first one at or after it; the last one if None), or None."""
    if not history:
        return None
    if step is None:
        return history[-1][1]
    return next((v for s, v in history if s >= step), None)


def per_layer(record: RunRecord, prefix: str, step: int | None = None) -> list[float]:
    """The per-layer metric ``<prefix>/lNN`` of one run as a list over layers (final, or at ``step``)."""
    keys = sorted(k for k in record.history if k.startswith(prefix + "/l") and k[len(prefix) + 2 :].isdigit())
    if not keys and step is None:
        keys = sorted(k for k in record.final if k.startswith(prefix + "/l") and k[len(prefix) + 2 :].isdigit())
        return [record.final[k] for k in keys]
    out = [at_step(record.history[k], step) for k in keys]
    return [v for v in out if v is not None]
