"""The report of an analysis run, written to one folder (``runs/analyze/<run>/`` by default):

- ``analysis.json``: every result (scalars, series, tables, matrices) plus the run's description;
- ``summary.md``: the scalars and tables of every analysis in markdown;
- ``<analysis>.<table>.csv``: each table;
- ``<analysis>.png``: the series, one panel per (axis, quantity), one line per series of that quantity
  (e.g. ``loss`` vs ``blocks removed`` with lines ``bi``, ``angular``, ``random``);
- ``<analysis>.<matrix>.png``: each matrix as a heat map (the angular distance for every start layer and span).
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from normlight.analysis.result import AnalysisResult


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.4g}"
    return "-" if v is None else str(v)


def markdown_table(rows: list[dict]) -> list[str]:
    """A markdown table of dict rows (columns = union of keys, first-seen order)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    return lines + ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]


def plot_series(res: AnalysisResult, path: Path) -> Path | None:
    """One panel per (axis, quantity) of ``res.series``; None if it has no series."""
    if not res.series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str], list] = defaultdict(list)
    for key, s in res.series.items():
        quantity, _, line = key.partition("/")
        panels[(s.axis, quantity)].append((line or quantity, s))
    n = len(panels)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, ((axis, quantity), lines) in zip(axes.flat, panels.items()):
        for label, s in lines:
            xs = list(range(s.start, s.start + len(s.values)))
            ax.plot(xs, s.values, marker="o", ms=3, label=label)
        ax.set_xlabel(axis)
        ax.set_ylabel(quantity)
        ax.set_title(f"{quantity} vs {axis}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(res.name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_matrix(name: str, key: str, m, path: Path) -> Path:
    """A heat map of one matrix (NaN cells left blank), values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    a = np.array(m.values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * a.shape[1], 1.0 + 0.5 * a.shape[0]))
    im = ax.imshow(np.ma.masked_invalid(a), cmap="viridis", aspect="auto")
    ax.set_xticks(range(a.shape[1]), [str(m.col_start + j) for j in range(a.shape[1])])
    ax.set_yticks(range(a.shape[0]), [str(m.row_start + i) for i in range(a.shape[0])])
    ax.set_xlabel(m.cols)
    ax.set_ylabel(m.rows)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if math.isfinite(a[i, j]):
                ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(im, ax=ax)
    ax.set_title(f"{name}: {key}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: list[AnalysisResult], out: Path, meta: dict | None = None) -> list[Path]:
    """Write every file of the report into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    files = []
    path = out / "analysis.json"
    path.write_text(json.dumps({"meta": meta, "results": [r.to_dict() for r in results]}, indent=1))
    files.append(path)
    md = [f"# {meta.get('title', 'layer analysis')}", ""]
    md += [f"- {k}: {v}" for k, v in meta.items() if k != "title"]
    for res in results:
        md += ["", f"## {res.name}", ""]
        if res.scalars:
            md += markdown_table([{"metric": k, "value": v} for k, v in res.scalars.items()]) + [""]
        for tname, rows in res.tables.items():
            if not rows:
                continue
            md += [f"### {tname}", ""] + markdown_table(rows) + [""]
            cpath = out / f"{res.name}.{tname}.csv"
            cols = list(dict.fromkeys(k for r in rows for k in r))
            with open(cpath, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=cols)
                w.writeheader()
                w.writerows(rows)
            files.append(cpath)
        md += [f"_{n}_" for n in res.notes]
        plot = plot_series(res, out / f"{res.name}.png")
        if plot:
            files.append(plot)
            md += ["", f"![{res.name}]({plot.name})"]
        for key, m in res.matrices.items():
            mpath = plot_matrix(res.name, key, m, out / f"{res.name}.{key}.png")
            files.append(mpath)
            md += ["", f"![{res.name} {key}]({mpath.name})"]
    spath = out / "summary.md"
    spath.write_text("\n".join(md) + "\n")
    files.append(spath)
    return files
