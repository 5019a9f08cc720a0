"""``normlight compare --experiment NAME``: tables and plots comparing the finished runs of an experiment."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from normlight.tracking import sweep_runs
from normlight.tracking.compare import CompareError, compare, compare_experiment_name, log_comparison
from normlight.tracking.mlflow_utils import default_tracking_uri
from normlight.tracking.ui import ui_link


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``normlight compare``."""
    p = argparse.ArgumentParser(
        prog="normlight compare", description="Compare the finished runs of an MLflow experiment."
    )
    p.add_argument("--experiment", required=True, help="MLflow experiment name")
    p.add_argument(
        "--group-by",
        default=None,
        help="comma-separated fields (tags/params); default: every config key that varies except the seed "
        "(runs are pooled only over seeds); with --group-by, every other varying key is pooled and named",
    )
    p.add_argument("--metric", default="val/loss", help="metric to compare (default val/loss)")
    p.add_argument("--lr-key", default="lr", help="field holding the learning rate (default lr)")
    p.add_argument(
        "--stable-tolerance",
        type=float,
        default=0.1,
        help="an LR is stable if no seed diverged and its final metric is within this fraction of the best (default 0.1)",
    )
    p.add_argument("--sweep", default=None, help="only runs of this sweep (tag 'sweep')")
    p.add_argument("--out", default=None, help="output folder (default runs/compare/<experiment>)")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)"
    )
    p.add_argument("--no-log", action="store_true", help="do not log the outputs to MLflow")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``normlight compare`` (argv[0] is ``compare``)."""
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "compare" else argv)
    uri = args.tracking_uri or default_tracking_uri()
    client = sweep_runs.client(uri)
    out = Path(args.out or Path("runs") / "compare" / args.experiment)
    group_by = [g.strip() for g in args.group_by.split(",") if g.strip()] if args.group_by else None
    try:
        result = compare(
            client, args.experiment, group_by, args.metric, out, args.lr_key, args.sweep, args.stable_tolerance
        )
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    grouping = result["grouping"]
    table = Table(
        title=f"{args.experiment}: {result['n_runs']} finished runs in {len(result['rows'])} groups, "
        "mean +- sample std over each group's runs"
    )
    for h in result["header"]:
        table.add_column(h)
    for row in result["rows"]:
        table.add_row(*row)
    Console(width=200).print(table)
    print(f"{grouping.describe()}")
    if grouping.fields is None and grouping.keys:
        shown = ", ".join(result["group_by"]) or "-"
        print(f"groups differ in: {grouping.differing()} (named above by {shown})")
    for label, lr in result["max_stable_lr"].items():
        print(f"max stable LR  {label}: {lr if lr is not None else 'none (every LR diverged)'}")
    for f in result["files"]:
        print(f"wrote {f}")
    if not args.no_log:
        rid = log_comparison(client, args.experiment, result, args.metric, uri)
        exp = client.get_experiment_by_name(compare_experiment_name(args.experiment))
        print(
            f"logged to MLflow run {rid} in experiment {exp.name!r} (artifacts under compare/); "
            f"with `normlight ui` running: {ui_link(exp.experiment_id, run_id=rid)}"
        )
    return 0
