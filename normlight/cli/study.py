"""``normlight study list|run|report|table``: published claims as runnable studies (see normlight.studies)."""

from __future__ import annotations

import argparse
import math
import sys

from normlight.errors import NormlightError
from normlight.studies import SCALES, get_study, list_studies


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``normlight study``."""
    p = argparse.ArgumentParser(prog="normlight study", description="Reproduce published claims about normalization.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="name, title, paper, runs and estimated CPU minutes of every installed study")
    for action, help_ in (
        ("run", "run a study's sweeps (resumable), measure, write its report and the study/NAME MLflow run"),
        ("report", "rebuild a study's report from what the store holds (says what is missing)"),
    ):
        a = sub.add_parser(action, help=help_)
        a.add_argument("name", help="study name (`normlight study list`)")
        a.add_argument("--scale", default="cpu", help=f"one of {', '.join(SCALES)} (default cpu)")
        a.add_argument("--seeds", type=int, default=None, help="seeds per grid point (default: the study's per scale)")
        a.add_argument(
            "--tracking-uri",
            default=None,
            help="MLflow store (default: MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db)",
        )
        a.add_argument("--out", default="docs/studies", help="report folder root (default docs/studies)")
        a.add_argument("--work-dir", default="runs/studies", help="sweep files and logs (default runs/studies)")
        if action == "run":
            a.add_argument("--workers", type=int, default=1, help="training processes at a time (default 1)")
            a.add_argument("--retry-failed", action="store_true", help="re-run grid points whose last run FAILED")
            a.add_argument("--dry-run", action="store_true", help="print one command per pending run and exit")
    t = sub.add_parser("table", help="regenerate docs/studies/README.md and the README table from result.json files")
    t.add_argument("--out", default="docs/studies", help="folder holding <study>/result.json (default docs/studies)")
    t.add_argument("--readme", default="README.md", help="README with the generated section (default README.md)")
    return p


def _list() -> int:
    from rich.console import Console
    from rich.table import Table

    from normlight.studies.runner import build_sweeps

    table = Table(title="normlight studies (`normlight study run NAME`)")
    table.add_column("name", no_wrap=True)
    for col in ("title", "paper", "runs (cpu)", "est. CPU min"):
        table.add_column(col, overflow="fold")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in list_studies():
            try:
                study = get_study(name)
                n = int(study.default_seeds.get("cpu", 3))
                runs = sum(len(s.points()) for s in build_sweeps(study, "cpu", n, tmp))
                minutes = study.estimated_cpu_minutes("cpu")
                table.add_row(
                    name, study.title, study.paper, str(runs), "?" if math.isnan(minutes) else f"{minutes:.0f}"
                )
            except NormlightError as e:
                table.add_row(name, f"[broken] {e}", "", "", "")
    Console().print(table)
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``normlight study`` (argv[0] is ``study``)."""
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "study" else argv)
    try:
        if args.action == "list":
            return _list()
        if args.action == "table":
            from normlight.studies.report import write_table

            for path in write_table(args.out, args.readme):
                print(f"[study] wrote {path}")
            return 0
        from normlight.studies import runner
        from normlight.tracking.mlflow_utils import default_tracking_uri

        if args.scale not in SCALES:
            raise runner.StudyError(f"unknown --scale {args.scale!r}; choose one of {', '.join(SCALES)}")
        if args.action == "run" and args.workers < 1:
            raise runner.StudyError(f"--workers must be >= 1, got {args.workers}")
        study = get_study(args.name)
        uri = args.tracking_uri or default_tracking_uri()
        common = dict(tracking_uri=uri, out=args.out, work_dir=args.work_dir)
        if args.action == "run":
            return runner.run_study(
                study,
                args.scale,
                args.seeds,
                workers=args.workers,
                retry_failed=args.retry_failed,
                dry_run=args.dry_run,
                **common,
            )
        return runner.report_study(study, args.scale, args.seeds, **common)
    except (NormlightError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
