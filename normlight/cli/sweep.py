"""``normlight sweep FILE``: run a grid of configs into one MLflow experiment (see normlight.sweep)."""

from __future__ import annotations

import argparse
import sys

from normlight.sweep.local import run_sweep
from normlight.sweep.spec import SweepError, load_sweep
from normlight.tracking.mlflow_utils import default_tracking_uri


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``normlight sweep``."""
    p = argparse.ArgumentParser(
        prog="normlight sweep",
        description="Run a grid of configs, each as its own "
        "'normlight fit' process, into one MLflow experiment (see configs/sweeps/).",
    )
    p.add_argument("sweep_file", help="sweep YAML (e.g. configs/sweeps/placement_lr.yaml)")
    p.add_argument("--workers", type=int, default=1, help="training processes at a time (default 1)")
    p.add_argument("--dry-run", action="store_true", help="print one shell command per pending run and exit")
    p.add_argument("--retry-failed", action="store_true", help="re-run grid points whose last run FAILED")
    p.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)"
    )
    p.add_argument("--max-runs", type=int, default=None, help="start at most this many pending runs (a partial sweep)")
    p.add_argument("--log-dir", default=None, help="where process logs go (default runs/sweeps/<name>)")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``normlight sweep`` (argv[0] is ``sweep``)."""
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "sweep" else argv)
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    try:
        return run_sweep(
            load_sweep(args.sweep_file),
            args.tracking_uri or default_tracking_uri(),
            workers=args.workers,
            retry_failed=args.retry_failed,
            max_runs=args.max_runs,
            log_dir=args.log_dir,
            dry_run=args.dry_run,
        )
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
