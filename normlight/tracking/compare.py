"""Comparison of the finished runs of one MLflow experiment (``normlight compare``): tables and plots.

- a table (mean +- std over seeds per group) printed with rich and written as CSV and markdown;
- ``curves.png``: the chosen metric (and ``train/loss``) against step per group, mean line and seed band;
- ``lr_sensitivity.png``: final metric against learning rate per variant, maximum stable LR marked;
- ``profiles.png``: per-layer gradient-norm and residual-RMS profiles (last diagnostic step) per group;
- all of it also logged as artifacts of a ``compare`` run in the same experiment (tag ``normlight.compare``),
  which ``normlight compare`` itself ignores.

A run's group value for a field (``norm``, ``placement``, ``lr``...) is its tag of that name, else its
param of that name, else the param or ``cfg.`` tag whose dotted key ends with ``.<field>``.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

from normlight.errors import NormlightError

COMPARE_TAG = "normlight.compare"
# run tag "step_axis/<metric>": what the step of a non-training metric counts (set by `normlight analyze`, whose
# per-layer and removal-curve metrics use the step for a layer index or the number of layers removed)
STEP_AXIS_TAG = "step_axis/"


def higher_is_better(name: str) -> bool:
    """Accuracy-like metrics are maximized; losses and perplexities minimized."""
    return "acc" in name.rsplit("/", 1)[-1]


SEED_FIELDS = ("seed_everything", "seed")


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
    """FINISHED runs of ``experiment`` (optionally of one sweep), comparison runs excluded."""
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
        runs.extend(r for r in page if r.data.tags.get(COMPARE_TAG) != "true")
        token = page.token
        if not token:
            break
    if not runs:
        raise CompareError(
            f"experiment {experiment!r} has no FINISHED runs" + (f" of sweep {sweep!r}" if sweep else "")
        )
    return runs


def auto_group_fields(runs, lr_key: str) -> list[str]:
    """The sweep's grid axes except the seed (tag ``sweep_axes``), else the config keys that vary between
    runs (``cfg.`` tags, seeds excluded), else norm and placement."""
    axes = {r.data.tags.get("sweep_axes") for r in runs} - {None, ""}
    if len(axes) == 1:
        return [a.split(".")[-1] for a in axes.pop().split(",")]
    keys = sorted({k for r in runs for k in r.data.tags if k.startswith("cfg.")})
    varying = [k[4:] for k in keys if len({r.data.tags.get(k) for r in runs}) > 1]
    fields = [k.split(".")[-1] for k in varying if k.split(".")[-1] not in SEED_FIELDS]
    return fields or ["norm", "placement"]


def _is_diverged(run) -> bool:
    return run.data.tags.get("diverged") == "true" or run.data.metrics.get("summary/diverged", 0.0) > 0


def _mean_std(vals):
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan"), 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def _fmt(mean, std, n) -> str:
    if n == 0:
        return "-"
    return f"{mean:.4g} +- {std:.2g}" if n > 1 else f"{mean:.4g}"


def summarize(runs, group_fields: list[str], metric: str) -> tuple[list[str], list[list[str]], list[dict]]:
    """(header, rows as strings, rows as numbers) of the comparison table, one row per group."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in runs:
        groups[tuple(field_value(r, f) or "-" for f in group_fields)].append(r)
    best_name = f"summary/best_{metric.replace('/', '_')}"
    extra = [
        k
        for k in ("summary/steps_to_target", "summary/tokens_per_sec", "summary/images_per_sec", "summary/peak_mem_mb")
        if any(k in r.data.metrics for r in runs)
    ]
    header = [
        *group_fields,
        "runs",
        "diverged",
        f"final {metric}",
        f"best {metric}",
        *(k.split("/", 1)[1] for k in extra),
    ]
    rows, records = [], []
    for key in sorted(groups, key=lambda k: [_sort_key(v) for v in k]):
        rs = groups[key]
        final = _mean_std([r.data.metrics.get(metric) for r in rs if not _is_diverged(r)])
        best = _mean_std([r.data.metrics.get(best_name) for r in rs])
        ext = [_mean_std([r.data.metrics.get(k) for r in rs]) for k in extra]
        div = sum(_is_diverged(r) for r in rs)
        rows.append([*key, str(len(rs)), str(div), _fmt(*final), _fmt(*best), *(_fmt(*e) for e in ext)])
        records.append(
            {
                "group": dict(zip(group_fields, key)),
                "runs": rs,
                "n": len(rs),
                "diverged": div,
                "final_mean": final[0],
                "final_std": final[1],
                "best_mean": best[0],
                "best_std": best[1],
            }
        )
    return header, rows, records


def _sort_key(v):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def write_tables(out: Path, header, rows) -> tuple[Path, Path]:
    """Write ``comparison.csv`` and ``comparison.md``; returns their paths."""
    csv_path, md_path = out / "comparison.csv", out / "comparison.md"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


# ---------------------------------------------------------------------------------------------- plots
def _label(group: dict) -> str:
    return " ".join(f"{v}" if k in ("norm", "placement", "model") else f"{k}={v}" for k, v in group.items()) or "all"


def step_axis(runs, metric: str) -> str:
    """What the step of ``metric`` counts: the runs' ``step_axis/<metric>`` tag, else the training step."""
    return next((r.data.tags[STEP_AXIS_TAG + metric] for r in runs if STEP_AXIS_TAG + metric in r.data.tags), "step")


def plot_curves(client, records, metrics: list[str], path: Path) -> Path | None:
    """Metric vs step per group: mean over seeds with a min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
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
            ax.fill_between(xs, [min(v) for v in vals], [max(v) for v in vals], color=line.get_color(), alpha=0.2)
        ax.set_xlabel(step_axis([r for rec, _ in histories[m] for r in rec["runs"]], m))
        ax.set_ylabel(m)
        ax.set_title(f"{m}: mean over seeds, band = min..max")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    ok = [
        lr
        for lr, m in means.items()
        if (m >= best - tolerance * abs(best) if maximize else m <= best + tolerance * abs(best))
    ]
    return max(ok)


def plot_lr_sensitivity(
    runs, group_fields, lr_key: str, metric: str, path: Path, tolerance: float = 0.1
) -> tuple[Path | None, dict]:
    """Final metric vs LR per variant (the group fields minus the LR); diverged seeds drawn as x at the top,
    the maximum stable LR (see :func:`max_stable_lr`) as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants: dict[tuple, list] = defaultdict(list)
    fields = [f for f in group_fields if f != lr_key]
    for r in runs:
        lr = field_value(r, lr_key)
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            continue
        variants[tuple(field_value(r, f) or "-" for f in fields)].append(
            (lr, _is_diverged(r), r.data.metrics.get(metric))
        )
    if not variants or len({p[0] for pts in variants.values() for p in pts}) < 2:
        return None, {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    finite = [v for pts in variants.values() for _, d, v in pts if not d and v is not None and math.isfinite(v)]
    top = max(finite) * 1.05 if finite else 1.0
    stable = {}
    for key in sorted(variants, key=lambda k: [_sort_key(v) for v in k]):
        pts = variants[key]
        lrs = sorted({p[0] for p in pts})
        means = []
        for lr in lrs:
            vals = [v for l, d, v in pts if l == lr and not d and v is not None and math.isfinite(v)]
            means.append(statistics.fmean(vals) if vals else float("nan"))
        label = _label(dict(zip(fields, key)))
        (line,) = ax.plot(lrs, means, marker="o", label=label)
        div_lrs = sorted({l for l, d, v in pts if d or v is None or not math.isfinite(v)})
        if div_lrs:
            ax.scatter(div_lrs, [top] * len(div_lrs), marker="x", color=line.get_color())
        best = max_stable_lr(pts, maximize=higher_is_better(metric), tolerance=tolerance)
        stable[label] = best
        if best is not None:
            ax.scatter([best], [means[lrs.index(best)]], marker="*", s=180, color=line.get_color(), zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel(f"learning rate ({lr_key})")
    ax.set_ylabel(f"final {metric}")
    ax.set_title(f"LR sensitivity: * = max stable LR (within {tolerance:.0%} of best), x = diverged")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, stable


_LAYER = re.compile(r"^(diag/grad_norm|diag/resid_rms)/l(\d+)$")


def plot_profiles(records, path: Path) -> Path | None:
    """Per-layer gradient norm and residual RMS (last logged value) per group, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for group, layers, vals in data[kind]:
            ax.plot(layers, vals, marker=".", label=_label(group))
        ax.set_yscale("log")
        ax.set_xlabel("block (depth)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(kind)
        ax.set_title(f"{kinds_title[kind]} (last diagnostic step, mean over seeds)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    """Build tables and plots in ``out``; returns {'header', 'rows', 'files', 'max_stable_lr', 'group_by'}."""
    runs = load_runs(client, experiment, sweep)
    if not any(metric in r.data.metrics for r in runs):
        have = sorted({m for r in runs for m in r.data.metrics if not m.startswith("diag/")})
        raise CompareError(f"no run of {experiment!r} has metric {metric!r}; available: {', '.join(have)}")
    group_by = group_by or auto_group_fields(runs, lr_key)
    header, rows, records = summarize(runs, group_by, metric)
    out.mkdir(parents=True, exist_ok=True)
    files = list(write_tables(out, header, rows))
    curve_metrics = [metric] + (["train/loss"] if metric != "train/loss" else [])
    for f in (
        plot_curves(client, records, curve_metrics, out / "curves.png"),
        plot_profiles(records, out / "profiles.png"),
    ):
        if f:
            files.append(f)
    lr_plot, stable = plot_lr_sensitivity(runs, group_by, lr_key, metric, out / "lr_sensitivity.png", tolerance)
    if lr_plot:
        files.append(lr_plot)
    return {
        "header": header,
        "rows": rows,
        "files": files,
        "max_stable_lr": stable,
        "group_by": group_by,
        "n_runs": len(runs),
    }


def log_comparison(client, experiment: str, result: dict, metric: str) -> str:
    """Log the outputs as artifacts of a new ``compare`` run in the experiment; returns its run id."""
    exp = client.get_experiment_by_name(experiment)
    run = client.create_run(
        exp.experiment_id,
        run_name=f"compare/{metric}",
        tags={COMPARE_TAG: "true", "compare.group_by": ",".join(result["group_by"]), "compare.metric": metric},
    )
    for f in result["files"]:
        client.log_artifact(run.info.run_id, str(f), "compare")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
