"""Slicing helpers shared by the studies of issue 18b (e5, e6, e7, e9, e19, dyt): numbers in, numbers out, no I/O.

A failed or diverged run is a result, not a gap: :func:`metric_values` scores it with the study's ``failed``
value (chance accuracy, the uniform-prediction loss), so a collapse counts against the method that collapsed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from normlight.studies.base import Outcome, RunRecord
from normlight.studies.verdict import mean_std


def ok(run: RunRecord, metric: str) -> bool:
    """Finished, not diverged, and ``metric`` logged with a finite value."""
    v = run.final.get(metric)
    return run.status == "FINISHED" and not run.diverged and v is not None and math.isfinite(v)


def pick(runs: Iterable[RunRecord], **labels) -> list[RunRecord]:
    """The runs whose labels equal every given item (``seed_everything`` etc. compared as strings)."""
    return [r for r in runs if all(str(r.labels.get(k)) == str(v) for k, v in labels.items())]


def metric_values(runs: Iterable[RunRecord], metric: str, failed: float) -> list[float]:
    """``metric``'s final value per run; ``failed`` for a run that failed, diverged or ended non-finite."""
    return [float(r.final[metric]) if ok(r, metric) else float(failed) for r in runs]


def tail_mean(run: RunRecord, metric: str, fraction: float = 0.5) -> float | None:
    """Mean of the finite values of ``metric`` logged in the last ``fraction`` of the run's logged steps."""
    hist = [(s, v) for s, v in run.history.get(metric, []) if v is not None and math.isfinite(v)]
    if not hist:
        return None
    last = hist[-1][0]
    start = last - fraction * (last - hist[0][0])
    vals = [v for s, v in hist if s >= start]
    return sum(vals) / len(vals)


def layer_tail_means(run: RunRecord, prefix: str, fraction: float = 0.5) -> list[float]:
    """Per-layer :func:`tail_mean` of the metrics ``<prefix>/lNN`` in layer order (layers never logged left out)."""
    keys = sorted(k for k in run.history if k.startswith(prefix + "/l") and k[len(prefix) + 2 :].isdigit())
    out = [tail_mean(run, k, fraction) for k in keys]
    return [v for v in out if v is not None]


def mean_or_nan(values: Iterable[float]) -> float:
    """The mean (nan for no value)."""
    return mean_std(list(values))[0]


def combine(parts: dict[str, Outcome]) -> Outcome:
    """All parts reproduced -> reproduced; any part not reproduced -> not reproduced; otherwise inconclusive."""
    outcomes = list(parts.values())
    if outcomes and all(o == "reproduced" for o in outcomes):
        return "reproduced"
    if any(o == "not reproduced" for o in outcomes):
        return "not reproduced"
    return "inconclusive"


def band_plot(ax, series: dict[str, dict[float, list[float]]], xlabel: str, ylabel: str, logx: bool = False) -> None:
    """Draw each series' mean over seeds against x, with a min-max band (x -> values per seed)."""
    for name, points in series.items():
        xs = sorted(points)
        if not xs:
            continue
        means = [mean_or_nan(points[x]) for x in xs]
        ax.plot(xs, means, marker="o", label=name)
        ax.fill_between(xs, [min(points[x]) for x in xs], [max(points[x]) for x in xs], alpha=0.2)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
