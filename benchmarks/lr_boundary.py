"""Boundary search vs full grid: how many runs ``--search lr-boundary`` needs, and whether it finds the grid's
max stable LR, on ``configs/sweeps/placement_lr_quick.yaml`` (5 placements x 4 LRs, gpt-nano, 150 steps).

Usage::

    .venv/bin/python benchmarks/lr_boundary.py                   # about 10-15 min on 2 quiet cores
    .venv/bin/python benchmarks/lr_boundary.py --sweep FILE --workers 2 --tolerance 0.1

In a fresh store it first runs the boundary search (counting the runs it trains), then the full grid (which
skips the points the search already trained: same config hashes), then judges every variant on the full grid
with the same rule (``tracking.compare.max_stable_lr``, what ``normlight compare`` reports). Writes
``benchmarks/results/lr_boundary.{json,md}``. Run counts and LRs only; no timing is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def grid_answer(sweep, uri: str, lr_key: str, metric: str, tolerance: float) -> dict:
    """{variant label: max stable LR over every LR of the full grid}."""
    from normlight.sweep import search
    from normlight.tracking import sweep_runs
    from normlight.tracking.compare import max_stable_lr

    c = sweep_runs.client(uri)
    exp = c.get_experiment_by_name(sweep.experiment)
    finished = {
        r.data.tags.get(sweep_runs.HASH_TAG): r
        for r in sweep_runs.sweep_runs(c, exp.experiment_id, sweep.name)
        if r.info.status == "FINISHED"
    }
    combos, seed_axis, seeds = search.variants(sweep, lr_key)
    out = {}
    for v in combos:
        points = []
        for lr in search.ladder(sweep, lr_key):
            runs = search.probe_runs(sweep, v, lr_key, lr, seed_axis, seeds)
            points += search._points(finished, runs, lr, metric)
        out[search.variant_label(v)] = max_stable_lr(points, tolerance=tolerance)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write the results files."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", default=str(ROOT / "configs" / "sweeps" / "placement_lr_quick.yaml"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=0.1, help="normlight compare's --stable-tolerance")
    p.add_argument("--metric", default="val/loss")
    p.add_argument("--out", default=str(RESULTS / "lr_boundary"), help="results path without extension")
    p.add_argument("--workdir", default=None, help="where the store goes (default: a new temporary folder)")
    args = p.parse_args(argv)

    from normlight.sweep import load_sweep, run_sweep, search

    sweep = load_sweep(Path(args.sweep).resolve())
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lr-boundary-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    lr_key = "model.lr"
    found = search.lr_boundary(
        sweep, uri, lr_key=lr_key, tolerance=args.tolerance, metric=args.metric, workers=args.workers
    )
    if "variants" not in found:
        print("error: the search was interrupted", file=sys.stderr)
        return 1
    search.print_boundary(found)
    code = run_sweep(sweep, uri, workers=args.workers)  # the rest of the grid
    grid = grid_answer(sweep, uri, lr_key, args.metric, args.tolerance)
    rows = []
    for label, v in found["variants"].items():
        rows.append(
            {
                "variant": label,
                "search_max_stable_lr": v["max_stable_lr"],
                "grid_max_stable_lr": grid[label],
                "same": v["max_stable_lr"] == grid[label],
                "search_runs": v["runs"],
                "search_lrs": v["probed"],
                "grid_runs": len(found["ladder"]) * v["runs"] // max(1, len(v["probed"])),
            }
        )
    result = {
        "sweep": str(Path(args.sweep).resolve().relative_to(ROOT))
        if ROOT in Path(args.sweep).resolve().parents
        else args.sweep,
        "tolerance": args.tolerance,
        "metric": args.metric,
        "ladder": found["ladder"],
        "search_runs": found["runs"],
        "grid_runs": found["grid_runs"],
        "saved_runs": found["grid_runs"] - found["runs"],
        "all_same": all(r["same"] for r in rows),
        "grid_exit_code": code,
        "variants": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# LR boundary search vs full grid: {result['sweep']}",
        "",
        f"Regenerate: `.venv/bin/python benchmarks/lr_boundary.py` (stable = no divergence and final {args.metric} "
        f"within {args.tolerance:.0%} of the best LR's, as `normlight compare`).",
        "",
        f"**{result['search_runs']} runs** for the boundary search vs **{result['grid_runs']}** for the grid over the "
        f"same LRs ({', '.join(f'{x:g}' for x in result['ladder'])}): {result['saved_runs']} fewer. "
        f"Same max stable LR for every variant: **{'yes' if result['all_same'] else 'no'}**.",
        "",
        "| variant | max stable LR (search) | max stable LR (grid) | same | search runs | LRs probed |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        fmt = lambda x: "none" if x is None else f"{x:g}"  # noqa: E731
        probed = ", ".join(f"{x:g}" for x in r["search_lrs"])
        lines.append(
            f"| {r['variant']} | {fmt(r['search_max_stable_lr'])} | {fmt(r['grid_max_stable_lr'])} | "
            f"{'yes' if r['same'] else 'NO'} | {r['search_runs']} | {probed} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if result["all_same"] else 1


if __name__ == "__main__":
    sys.exit(main())
