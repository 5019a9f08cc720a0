"""``normlight sweep FILE``: run a grid of configs into one MLflow experiment (see normlight.sweep)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from normlight.sweep import search
from normlight.sweep.local import run_sweep
from normlight.sweep.spec import SweepError, load_sweep
from normlight.sweep.status import show_status
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
    p.add_argument(
        "--launcher",
        default="local",
        help="local: --workers processes here; slurm: a SLURM job array (submitit, pip install 'normlight[slurm]'); "
        "ray: one Ray task per run (pip install 'normlight[ray]')",
    )
    p.add_argument("--status", action="store_true", help="show each point's state (store + scheduler) and exit")
    r = p.add_argument_group("per-run resources (slurm, ray; override the sweep file's 'resources:')")
    r.add_argument("--nodes", type=int, default=None)
    r.add_argument("--gpus-per-task", type=int, default=None)
    r.add_argument("--cpus-per-task", type=int, default=None)
    r.add_argument("--mem-gb", type=float, default=None)
    r.add_argument("--time-min", type=int, default=None, help="wall-clock limit of one run, minutes")
    r.add_argument("--partition", default=None)
    r.add_argument("--account", default=None)
    r.add_argument(
        "--slurm-cluster",
        default=None,
        help="slurm: 'slurm' or 'local' (submitit's local executor); default: SLURM where srun exists, else local",
    )
    r.add_argument("--wait", action="store_true", help="slurm: wait until the array's tasks end")
    r.add_argument("--ray-address", default=None, help="ray: ray.init address (default: a local Ray instance)")
    q = p.add_argument_group("adaptive search instead of the full grid")
    q.add_argument(
        "--search",
        default=None,
        choices=["lr-boundary", "optuna"],
        help="lr-boundary: largest stable LR per variant (ternary search for the best LR, then bisection above it); "
        "optuna: TPE over the grid's ranges",
    )
    q.add_argument("--lr-key", default="model.lr", help="config key of the learning rate (default model.lr)")
    q.add_argument("--lr-min", type=float, default=None, help="lr-boundary: lowest LR (default: the grid's LRs)")
    q.add_argument("--lr-max", type=float, default=None, help="lr-boundary: highest LR")
    q.add_argument("--lr-points", type=int, default=None, help="lr-boundary: log-spaced LRs in [min, max] (default 9)")
    q.add_argument(
        "--stable-tolerance",
        type=float,
        default=0.1,
        help="stable = no divergence and final metric within this fraction of the best (as normlight compare)",
    )
    q.add_argument("--metric", default="val/loss", help="the metric judged / minimized (default val/loss)")
    q.add_argument("--trials", type=int, default=20, help="optuna: trials this driver runs (default 20)")
    q.add_argument(
        "--optuna-storage",
        default=None,
        help="optuna: RDB storage URL (default: derived from the tracking store, shared by every driver)",
    )
    return p


RESOURCE_FLAGS = ("nodes", "gpus_per_task", "cpus_per_task", "mem_gb", "time_min", "partition", "account")


def main(argv: list[str]) -> int:
    """Entry point of ``normlight sweep`` (argv[0] is ``sweep``)."""
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "sweep" else argv)
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    resources = {k: getattr(args, k) for k in RESOURCE_FLAGS if getattr(args, k) is not None}
    try:
        sweep = load_sweep(args.sweep_file)
        uri = args.tracking_uri or default_tracking_uri()
        if args.status:
            return show_status(sweep, uri, Path(args.log_dir or Path("runs") / "sweeps" / sweep.name))
        launch = dict(
            workers=args.workers,
            retry_failed=args.retry_failed,
            log_dir=args.log_dir,
            launcher=args.launcher,
            resources=resources,
            slurm_cluster=args.slurm_cluster,
            wait=True,
            ray_address=args.ray_address,
        )
        if args.search == "lr-boundary":
            result = search.lr_boundary(
                sweep,
                uri,
                lr_key=args.lr_key,
                lr_min=args.lr_min,
                lr_max=args.lr_max,
                lr_points=args.lr_points,
                tolerance=args.stable_tolerance,
                metric=args.metric,
                **launch,
            )
            if "variants" in result:
                search.print_boundary(result)
            return result["exit_code"]
        if args.search == "optuna":
            from normlight.sweep import optuna_search

            return optuna_search.optuna_search(
                sweep,
                uri,
                trials=args.trials,
                metric=args.metric,
                storage=args.optuna_storage,
                lr_key=args.lr_key,
                **launch,
            )
        return run_sweep(
            sweep,
            uri,
            workers=args.workers,
            retry_failed=args.retry_failed,
            max_runs=args.max_runs,
            log_dir=args.log_dir,
            dry_run=args.dry_run,
            launcher=args.launcher,
            resources=resources,
            slurm_cluster=args.slurm_cluster,
            wait=args.wait,
            ray_address=args.ray_address,
        )
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
