"""Comparison of the finished runs of one MLflow experiment (``normlight compare``): tables and plots.

Runs are pooled only when they differ in nothing but the seed: by default a group is one setting of every
config key (flat run params) that varies in the experiment, seeds (``seed_everything``, ``*seed``)
excepted, so GPT and ViT runs with the same norm are never averaged. ``--group-by`` names the fields
instead; every varying key it leaves out is then pooled too, and the output says which ones.

- a table (mean, sample std and n over the pooled runs per group) printed with rich and written as CSV
  (separate ``mean``/``std``/``n`` columns) and markdown; the family's headline metric (``val/ppl``,
  ``val/acc1``) sits beside the compared one;
- ``curves.png``: the chosen metric (and ``train/loss``) against step per group, mean line and seed band;
- ``lr_sensitivity.png``: final metric against learning rate per variant (a group without its LR), drawn
  only for variants trained at two or more LRs, the maximum stable LR marked;
- ``profiles.png``: per-layer gradient-norm and residual-RMS profiles (last diagnostic step) per group;
- all of it also logged as artifacts of a run in the experiment ``<experiment>/compare``, so comparison
  runs stay out of the training runs table.

A run's value for a field (``norm``, ``placement``, ``lr``...) is its tag of that name, else its param of
that name, else the param or ``cfg.`` tag whose dotted key ends with ``.<field>``.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from normlight.errors import NormlightError
from normlight.tracking.presentation import MAX_STABLE_LR_TAG, PARENT_TAG, update_view
from normlight.tracking.run_fields import is_seed_key, run_config

COMPARE_TAG = "normlight.compare"
# run tag "step_axis/<metric>": what the step of a non-training metric counts (set by `normlight analyze`, whose
# per-layer and removal-curve metrics use the step for a layer index or the number of layers removed)
STEP_AXIS_TAG = "step_axis/"
HEADLINE = ("val/ppl", "val/acc1")  # per family: language models report perplexity, classifiers top-1 accuracy
EXTRA = ("summary/steps_to_target", "summary/tokens_per_sec", "summary/images_per_sec", "summary/peak_mem_mb")
# tags that name a setting readably; tried first when choosing the table's group columns
NAMING_TAGS = ("preset", "norm", "placement", "qk_norm")


def higher_is_better(name: str) -> bool:
    """Accuracy-like metrics are maximized; losses and perplexities minimized."""
    return "acc" in name.split("/")[-1]


class CompareError(NormlightError):
    """Nothing to compare (unknown experiment, no finished runs, unknown metric); the message says why."""


# ---------------------------------------------------------------------------------------------- data
def field_value(run, name: str) -> str | None:
    """The value of ``name`` for a run: tag, param, or a dotted param / ``cfg.`` tag ending in ``.name``."""
    tags, params = run.data.tags, run.data.params
    if name in tags:
        return tags[name]
    if name in params:
        return params[name]
    for source, strip in ((params, ""), (tags, "cfg.")):
        for key, value in sorted(source.items()):
            if key.startswith(strip) and key.endswith("." + name):
                return value
    return None


def load_runs(client, experiment: str, sweep: str | None = None) -> list:
    """FINISHED runs of ``experiment`` (optionally of one sweep); comparison and sweep parent runs excluded."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise CompareError(
            f"no experiment named {experiment!r}; experiments in this store: {', '.join(names) or '(none)'}"
        )
    filt = "attributes.status = 'FINISHED'" + (f" and tags.sweep = '{sweep}'" if sweep else "")
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=filt, max_results=1000, page_token=token)
        runs.extend(r for r in page if "true" not in (r.data.tags.get(COMPARE_TAG), r.data.tags.get(PARENT_TAG)))
        token = page.token
        if not token:
            break
    if not runs:
        raise CompareError(
            f"experiment {experiment!r} has no FINISHED runs" + (f" of sweep {sweep!r}" if sweep else "")
        )
    return runs


@dataclass
class Grouping:
    """How runs are pooled. ``key(run)`` is a run's group; ``columns`` name a group in tables and legends;
    ``pooled`` lists the varying config keys whose values are averaged over inside a group."""

    fields: list[str] | None  # declared --group-by fields, or None: every varying non-seed config key
    keys: list[str]  # the varying non-seed config keys (the default group identity)
    columns: list[str]
    pooled: list[str]
    varying: list[str] = field(default_factory=list)

    def key(self, run) -> tuple:
        """The group of ``run``."""
        if self.fields is not None:
            return tuple(field_value(run, f) or "-" for f in self.fields)
        cfg = run_config(run)
        return tuple(cfg.get(k, "-") for k in self.keys)

    def describe(self) -> str:
        """One line for the console and the plot titles: what defines a group and what was pooled."""
        how = (
            f"grouped by --group-by {','.join(self.fields)}"
            if self.fields is not None
            else f"grouped by every varying config key but the seed ({len(self.keys)} keys)"
        )
        return f"{how}; pooled over: {_some(self.pooled) if self.pooled else 'nothing (one run per group)'}"

    def differing(self) -> str:
        """The config keys that tell groups apart (the first few)."""
        return _some(self.keys)


def _some(keys: list[str], limit: int = 8) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _covers(field_name: str, key: str) -> bool:
    return key == field_name or key.endswith("." + field_name)


def _axis_columns(runs) -> list[str]:
    """The sweep's declared grid axes (tag ``sweep_axes``) except the seed, as field names."""
    axes = {r.data.tags.get("sweep_axes") for r in runs} - {None, ""}
    if len(axes) != 1:
        return []
    return [a.split(".")[-1] for a in axes.pop().split(",") if a and not is_seed_key(a)]


def plan_groups(runs, group_by: list[str] | None = None) -> Grouping:
    """Decide the grouping: declared fields, or every varying config key except seeds (see module doc)."""
    configs = [run_config(r) for r in runs]
    all_keys = sorted({k for c in configs for k in c})
    varying = [k for k in all_keys if len({c.get(k) for c in configs}) > 1]
    keys = [k for k in varying if not is_seed_key(k)]
    grouping = Grouping(list(group_by) if group_by else None, keys, list(group_by or []), [], varying)
    groups: dict[tuple, list] = defaultdict(list)
    for r in runs:
        groups[grouping.key(r)].append(r)
    # pooled = what actually differs between runs of one group (a key missing in some runs counts)
    by_run = {id(r): c for r, c in zip(runs, configs)}
    grouping.pooled = [k for k in varying if any(len({by_run[id(r)].get(k) for r in rs}) > 1 for rs in groups.values())]
    if group_by:
        return grouping
    # name the groups with as few readable fields as tell them apart: the sweep's axes, then naming tags,
    # then the varying keys themselves; a field is used only if it is constant inside every group
    columns: list[str] = []
    seen: set[tuple] = {()}
    axes = _axis_columns(runs)
    for cand in dict.fromkeys(axes + list(NAMING_TAGS) + keys):
        if any(len({_column_value(r, cand) for r in rs}) != 1 for rs in groups.values()):
            continue  # varies inside a group (or is missing somewhere): cannot name it
        combos = {tuple(_column_value(rs[0], c) for c in [*columns, cand]) for rs in groups.values()}
        if cand in axes or len(combos) > len(seen):
            columns.append(cand)
            seen = combos
        if len(seen) == len(groups) and all(a in columns for a in axes):
            break
    grouping.columns = columns
    return grouping


def _column_value(run, column: str) -> str:
    value = run_config(run).get(column) if "." in column else field_value(run, column)
    return "-" if value is None else value


def column_labels(columns: list[str]) -> list[str]:
    """Short column names: the last part of a dotted key where that is unambiguous."""
    leaves = [c.rsplit(".", 1)[-1] for c in columns]
    return [leaf if leaves.count(leaf) == 1 else c for c, leaf in zip(columns, leaves)]


def auto_group_fields(runs, lr_key: str = "lr") -> list[str]:
    """The column names :func:`plan_groups` would use for ``runs`` (kept for scripts that called it)."""
    return column_labels(plan_groups(runs).columns)


def _is_diverged(run) -> bool:
    return run.data.tags.get("diverged") == "true" or run.data.metrics.get("summary/diverged", 0.0) > 0


def stability_point(run, metric: str = "val/loss") -> tuple[bool, float | None]:
    """(diverged, final ``metric``) of one run: what :func:`max_stable_lr` judges (the LR searches use it too)."""
    return _is_diverged(run), run.data.metrics.get(metric)


def _mean_std(vals):
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def _fmt(mean, std, n) -> str:
    if n == 0:
        return "-"
    return f"{mean:.4g} +- {std:.2g}" if n > 1 else f"{mean:.4g}"


def _stat_names(runs, metric: str) -> list[tuple[str, str]]:
    """(label, metric name) of every statistic in the table: final and best ``metric``, the headline
    metrics the runs have, then throughput-like summaries."""
    have = {m for r in runs for m in r.data.metrics}
    best_name = f"summary/best_{metric.replace('/', '_')}"
    out = [(f"final {metric}", metric), (f"best {metric}", best_name)]
    out += [(f"final {h}", h) for h in HEADLINE if h != metric and h in have]
    out += [(k.removeprefix("summary/"), k) for k in EXTRA if k in have]
    return out


def summarize(
    runs, group_fields: list[str] | None, metric: str, grouping: Grouping | None = None
) -> tuple[list[str], list[list[str]], list[dict]]:
    """(header, rows as strings, rows as numbers) of the comparison table, one row per group.

    ``grouping`` (from :func:`plan_groups`) decides the groups; without it, ``group_fields`` are the
    --group-by fields. Final values leave diverged runs out (their count is in ``diverged``)."""
    grouping = grouping or plan_groups(runs, group_fields)
    groups: dict[tuple, list] = defaultdict(list)
    for r in runs:
        groups[grouping.key(r)].append(r)
    stats = _stat_names(runs, metric)
    labels = column_labels(grouping.columns)
    header = [*labels, "runs", "diverged", *(name for name, _ in stats)]
    rows, records = [], []
    for key in sorted(groups, key=lambda k: [_sort_key(v) for v in k]):
        rs = groups[key]
        group = dict(zip(labels, (_column_value(rs[0], c) for c in grouping.columns)))
        values = {}
        for name, m in stats:
            pool = [r for r in rs if not _is_diverged(r)] if name.startswith("final ") else rs
            values[name] = _mean_std([r.data.metrics.get(m) for r in pool])
        div = sum(_is_diverged(r) for r in rs)
        rows.append([*group.values(), str(len(rs)), str(div), *(_fmt(*values[name]) for name, _ in stats)])
        final, best = values[f"final {metric}"], values[f"best {metric}"]
        records.append(
            {
                "group": group,
                "runs": rs,
                "n": len(rs),
                "diverged": div,
                "final_mean": final[0],
                "final_std": final[1],
                "final_n": final[2],
                "best_mean": best[0],
                "best_std": best[1],
                "stats": values,
            }
        )
    return header, rows, records


def _sort_key(v):
    """Numbers first, in numeric order, then every other value as text."""
    try:
        return (False, float(v))
    except (TypeError, ValueError):
        return (True, str(v))


def write_tables(out: Path, header, rows, records: list[dict] | None = None) -> tuple[Path, Path]:
    """Write ``comparison.csv`` (numbers: ``<stat> mean``, ``<stat> std``, ``<stat> n``; std is the sample
    standard deviation, empty below two values) and ``comparison.md`` (the printed table); returns their paths."""
    csv_path, md_path = out / "comparison.csv", out / "comparison.md"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        if records is None:
            w.writerow(header)
            w.writerows(rows)
        else:
            stats = list(records[0]["stats"]) if records else []
            w.writerow(
                [*records[0]["group"], "runs", "diverged", *(f"{s} {p}" for s in stats for p in ("mean", "std", "n"))]
                if records
                else header
            )
            for rec in records:
                cells = [*rec["group"].values(), rec["n"], rec["diverged"]]
                for s in stats:
                    mean, std, n = rec["stats"][s]
                    cells += ["" if n == 0 else repr(mean), "" if n < 2 else repr(std), n]
                w.writerow(cells)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


# ---------------------------------------------------------------------------------------------- plots
def _label(group: dict) -> str:
    return (
        " ".join(f"{v}" if k in ("norm", "placement", "model", "preset") else f"{k}={v}" for k, v in group.items())
        or "all"
    )


def step_axis(runs, metric: str) -> str:
    """What the step of ``metric`` counts: the runs' ``step_axis/<metric>`` tag, else the training step."""
    return next((r.data.tags[STEP_AXIS_TAG + metric] for r in runs if STEP_AXIS_TAG + metric in r.data.tags), "step")


def _pooled_phrase(pooled: list[str] | None) -> str:
    if pooled is None:
        return "mean over seeds"
    return f"mean over {', '.join(pooled)}" if pooled else "one run per line"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# the look shared by the plots: one panel's size (inches), resolution, font sizes (titles name the pooled keys,
# legends one entry per group, so both are small), grid and seed-band opacity
PANEL_INCHES = (6.5, 4.4)
LR_FIGURE_INCHES = (7, 4.8)
DPI = 110
TITLE_PT, LEGEND_PT = 9, 7
GRID_ALPHA, BAND_ALPHA = 0.3, 0.2


def _panels(plt, n: int):
    """A figure of ``n`` panels side by side and the list of their axes."""
    fig, axes = plt.subplots(1, n, figsize=(PANEL_INCHES[0] * n, PANEL_INCHES[1]), squeeze=False)
    return fig, list(axes[0])


def _style(ax, title: str) -> None:
    ax.set_title(title, fontsize=TITLE_PT)
    ax.grid(alpha=GRID_ALPHA)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_curves(client, records, metrics: list[str], path: Path, pooled: list[str] | None = None) -> Path | None:
    """Metric vs step per group: mean over the pooled runs with a min-max band; titles say what was pooled."""
    plt = _pyplot()
    histories = {m: [] for m in metrics}
    for m in metrics:
        for rec in records:
            per_run = []
            for r in rec["runs"]:
                h = client.get_metric_history(r.info.run_id, m)
                if h:
                    per_run.append({p.step: p.value for p in h})
            if per_run:
                histories[m].append((rec, per_run))
    metrics = [m for m in metrics if histories[m]]
    if not metrics:
        return None
    fig, axes = _panels(plt, len(metrics))
    for ax, m in zip(axes, metrics):
        for rec, per_run in histories[m]:
            steps = sorted(set().union(*per_run))
            vals = [[d[s] for d in per_run if s in d and math.isfinite(d[s])] for s in steps]
            xs = [s for s, v in zip(steps, vals) if v]
            if not xs:
                continue
            vals = [v for v in vals if v]
            (line,) = ax.plot(
                xs, [statistics.fmean(v) for v in vals], label=_label(rec["group"]) + f" (n={len(per_run)})"
            )
            ax.fill_between(
                xs, [min(v) for v in vals], [max(v) for v in vals], color=line.get_color(), alpha=BAND_ALPHA
            )
        ax.set_xlabel(step_axis([r for rec, _ in histories[m] for r in rec["runs"]], m))
        ax.set_ylabel(m)
        _style(ax, f"{m}: {_pooled_phrase(pooled)}, band = min..max")
    axes[-1].legend(fontsize=LEGEND_PT, loc="upper right")
    return _save(plt, fig, path)


def max_stable_lr(
    points: list[tuple[float, bool, float]], maximize: bool = False, tolerance: float = 0.1
) -> float | None:
    """Largest LR at which no seed diverged and the mean final metric is within ``tolerance`` (relative)
    of the best LR's (catalog D22: "width of the LR interval within 10% of the best loss").
    ``points`` are (lr, diverged, final metric) per run."""
    by_lr: dict[float, list] = defaultdict(list)
    for lr, div, val in points:
        by_lr[lr].append(None if div or val is None or not math.isfinite(val) else val)
    means = {lr: statistics.fmean(v) for lr, v in by_lr.items() if all(x is not None for x in v)}
    if not means:
        return None
    best = max(means.values()) if maximize else min(means.values())
    return max(lr for lr, m in means.items() if within_tolerance(m, best, tolerance, maximize))


def within_tolerance(value: float, best: float, tolerance: float, maximize: bool = False) -> bool:
    """Whether ``value`` is no worse than ``best`` by more than ``tolerance`` (relative to ``|best|``)."""
    return value >= best - tolerance * abs(best) if maximize else value <= best + tolerance * abs(best)


def format_lr(lr: float) -> str:
    """Compact tick label for a learning rate: 1e-3, 3e-2, 2.5e-4, 0.5."""
    if not math.isfinite(lr):
        return f"{lr:g}"
    mant, exp = f"{lr:.2e}".split("e")
    return f"{float(mant):g}e{int(exp)}" if abs(int(exp)) >= 2 else f"{lr:g}"


def lr_variants(runs, grouping: Grouping, lr_key: str) -> dict[tuple, list]:
    """Runs by variant (their group without the learning rate): (lr, diverged, final metric run) per run.
    Runs without a numeric ``lr_key`` are left out."""
    variants: dict[tuple, list] = defaultdict(list)
    for r in runs:
        try:
            lr = float(field_value(r, lr_key))
        except (TypeError, ValueError):
            continue
        if grouping.fields is not None:
            key = tuple(field_value(r, f) for f in grouping.fields if f != lr_key)  # None: the run lacks it
        else:
            cfg = run_config(r)
            key = tuple(cfg.get(k) for k in grouping.keys if not _covers(lr_key, k))
        variants[key].append((lr, r))
    return variants


def plot_lr_sensitivity(
    runs,
    grouping: Grouping | list,
    lr_key: str,
    metric: str,
    path: Path,
    tolerance: float = 0.1,
    members: dict | None = None,
) -> tuple[Path | None, dict]:
    """Final metric vs LR per variant trained at two or more LRs (a line never joins two variants);
    diverged seeds drawn as x at the top, the maximum stable LR (see :func:`max_stable_lr`) as a star.
    Log x axis with one readable label per LR used."""
    if not isinstance(grouping, Grouping):  # a list of --group-by fields
        grouping = plan_groups(runs, list(grouping) or None)
    columns = [c for c in grouping.columns if not _covers(lr_key, c)]
    labels = column_labels(columns)
    variants = {}
    for key, items in lr_variants(runs, grouping, lr_key).items():
        if len({lr for lr, _ in items}) >= 2:
            first = items[0][1]
            name = _label(dict(zip(labels, (_column_value(first, c) for c in columns))))
            variants[name] = [(lr, _is_diverged(r), r.data.metrics.get(metric)) for lr, r in items]
            if members is not None:  # which runs each plotted variant holds (run ids)
                members[name] = [r.info.run_id for _, r in items]
    if not variants:
        return None, {}
    plt = _pyplot()
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, ax = plt.subplots(figsize=LR_FIGURE_INCHES)
    finite = [v for pts in variants.values() for _, d, v in pts if not d and v is not None and math.isfinite(v)]
    top = max(finite) * 1.05 if finite else 1.0
    stable = {}
    for label in sorted(variants):
        pts = variants[label]
        lrs = sorted({p[0] for p in pts})
        means = []
        for lr in lrs:
            vals = [v for l, d, v in pts if l == lr and not d and v is not None and math.isfinite(v)]
            means.append(statistics.fmean(vals) if vals else math.nan)
        (line,) = ax.plot(lrs, means, marker="o", label=label)
        div_lrs = sorted({l for l, d, v in pts if d or v is None or not math.isfinite(v)})
        if div_lrs:
            ax.scatter(div_lrs, [top] * len(div_lrs), marker="x", color=line.get_color())
        best = max_stable_lr(pts, maximize=higher_is_better(metric), tolerance=tolerance)
        stable[label] = best
        if best is not None:
            ax.scatter([best], [means[lrs.index(best)]], marker="*", s=180, color=line.get_color(), zorder=3)
    ax.set_xscale("log")
    # one label per LR actually used (log axes otherwise label every decade and minor tick, which collide)
    used = sorted({lr for pts in variants.values() for lr, _, _ in pts if lr > 0})
    ax.xaxis.set_major_locator(FixedLocator(used))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels(
        [format_lr(v) for v in used], rotation=45 if len(used) > 6 else 0, ha="right" if len(used) > 6 else "center"
    )
    ax.set_xlabel(f"learning rate ({lr_key})")
    ax.set_ylabel(f"final {metric}")
    _style(
        ax,
        f"LR sensitivity, {_pooled_phrase(grouping.pooled)}\n* = max stable LR (within {tolerance:.0%} of best), x = diverged",
    )
    ax.legend(fontsize=LEGEND_PT)
    return _save(plt, fig, path), stable


_LAYER = re.compile(r"^(diag/grad_norm|diag/resid_rms)/l(\d+)$")


def plot_profiles(records, path: Path, pooled: list[str] | None = None) -> Path | None:
    """Per-layer gradient norm and residual RMS (last logged value) per group, mean over the pooled runs."""
    kinds = {"diag/grad_norm": "gradient norm per block", "diag/resid_rms": "residual-stream RMS per block"}
    data = {k: [] for k in kinds}
    for rec in records:
        for kind in kinds:
            per_layer: dict[int, list] = defaultdict(list)
            for r in rec["runs"]:
                for name, value in r.data.metrics.items():
                    m = _LAYER.match(name)
                    if m and m.group(1) == kind and math.isfinite(value):
                        per_layer[int(m.group(2))].append(value)
            if per_layer:
                layers = sorted(per_layer)
                data[kind].append((rec["group"], layers, [statistics.fmean(per_layer[i]) for i in layers]))
    kinds_title, kinds = kinds, [k for k in kinds if data[k]]
    if not kinds:
        return None
    plt = _pyplot()
    fig, axes = _panels(plt, len(kinds))
    for ax, kind in zip(axes, kinds):
        for group, layers, vals in data[kind]:
            ax.plot(layers, vals, marker=".", label=_label(group))
        ax.set_yscale("log")
        ax.set_xlabel("block (depth)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(kind)
        _style(ax, f"{kinds_title[kind]} (last diagnostic step, {_pooled_phrase(pooled)})")
    axes[-1].legend(fontsize=LEGEND_PT)
    return _save(plt, fig, path)


def compare(
    client,
    experiment: str,
    group_by: list[str] | None,
    metric: str,
    out: Path,
    lr_key: str = "lr",
    sweep: str | None = None,
    tolerance: float = 0.1,
) -> dict:
    """Build tables and plots in ``out``; returns {'header', 'rows', 'records', 'files', 'max_stable_lr',
    'group_by', 'grouping', 'n_runs'}."""
    runs = load_runs(client, experiment, sweep)
    if not any(metric in r.data.metrics for r in runs):
        have = sorted({m for r in runs for m in r.data.metrics if not m.startswith("diag/")})
        raise CompareError(f"no run of {experiment!r} has metric {metric!r}; available: {', '.join(have)}")
    grouping = plan_groups(runs, group_by)
    header, rows, records = summarize(runs, group_by, metric, grouping)
    out.mkdir(parents=True, exist_ok=True)
    files = list(write_tables(out, header, rows, records))
    curve_metrics = [metric] + (["train/loss"] if metric != "train/loss" else [])
    for f in (
        plot_curves(client, records, curve_metrics, out / "curves.png", grouping.pooled),
        plot_profiles(records, out / "profiles.png", grouping.pooled),
    ):
        if f:
            files.append(f)
    members: dict[str, list] = {}
    lr_plot, stable = plot_lr_sensitivity(
        runs, grouping, lr_key, metric, out / "lr_sensitivity.png", tolerance, members
    )
    if lr_plot:
        files.append(lr_plot)
    return {
        "header": header,
        "rows": rows,
        "records": records,
        "files": files,
        "max_stable_lr": stable,
        "variant_runs": members,
        "group_by": column_labels(grouping.columns),
        "grouping": grouping,
        "n_runs": len(runs),
    }


def compare_experiment_name(experiment: str) -> str:
    """Where the comparison runs of ``experiment`` go: their own experiment, out of the training runs table."""
    return f"{experiment}/compare"


def log_comparison(client, experiment: str, result: dict, metric: str, tracking_uri: str = "") -> str:
    """Log the outputs as artifacts of a new run in ``<experiment>/compare``; returns its run id."""
    from normlight.tracking.sweep_runs import ensure_experiment

    exp_id = ensure_experiment(client, compare_experiment_name(experiment), tracking_uri)
    grouping = result.get("grouping")
    tags = {
        COMPARE_TAG: "true",
        "compare.experiment": experiment,
        "compare.group_by": ",".join(result["group_by"]),
        "compare.metric": metric,
    }
    if grouping is not None:
        tags["compare.pooled"] = ",".join(grouping.pooled) or "-"
        tags["mlflow.note.content"] = f"Comparison of experiment {experiment!r} on {metric}: {grouping.describe()}."
    run = client.create_run(exp_id, run_name=f"compare/{metric}", tags=tags)
    for f in result["files"]:
        client.log_artifact(run.info.run_id, str(f), "compare")
    client.set_terminated(run.info.run_id)  # FINISHED
    # the training runs carry their variant's max stable LR, a column of the experiment's UI view
    for label, lr in result["max_stable_lr"].items():
        for rid in result.get("variant_runs", {}).get(label, []):
            client.set_tag(rid, MAX_STABLE_LR_TAG, format_lr(lr) if lr is not None else "none (all diverged)")
    training = client.get_experiment_by_name(experiment)
    update_view(client, training.experiment_id)
    return run.info.run_id
