"""Drawing helpers shared by study plots (each draws on one matplotlib Axes the report provides)."""

from __future__ import annotations

import math


def profiles(ax, groups: dict[str, list[list[float]]], ylabel: str, *, log: bool = False) -> None:
    """Per-layer profiles: for each label, the mean over seeds with a min-max band, against layer index."""
    for label, seqs in groups.items():
        seqs = [s for s in seqs if s]
        if not seqs:
            continue
        n = min(len(s) for s in seqs)
        xs = list(range(n))
        cols = [[s[i] for s in seqs if math.isfinite(s[i])] or [math.nan] for i in xs]
        mean = [sum(c) / len(c) for c in cols]
        (line,) = ax.plot(xs, mean, marker=".", label=label)
        if len(seqs) > 1:
            ax.fill_between(xs, [min(c) for c in cols], [max(c) for c in cols], color=line.get_color(), alpha=0.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def curves(ax, groups: dict[str, list[list[tuple[int, float]]]], ylabel: str, *, log: bool = False) -> None:
    """Metric histories: for each label, the mean over seeds at each logged step with a min-max band."""
    for label, hists in groups.items():
        by_step: dict[int, list[float]] = {}
        for h in hists:
            for s, v in h:
                if math.isfinite(v):
                    by_step.setdefault(s, []).append(v)
        xs = sorted(by_step)
        if not xs:
            continue
        (line,) = ax.plot(xs, [sum(by_step[s]) / len(by_step[s]) for s in xs], label=label)
        if len(hists) > 1:
            lo, hi = [min(by_step[s]) for s in xs], [max(by_step[s]) for s in xs]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
