"""Boundary search vs full grid: how many runs ``--search lr-boundary`` needs, and whether it finds the grid's
max stable LR, on ``configs/sweeps/placement_lr_quick.yaml`` (5 placements, gpt-nano, 150 steps), for two LR
ladders: the sweep's own 4 LRs and a denser 9-point log ladder over the same range.

Usage::

    .venv/bin/python benchmarks/lr_boundary.py            # both ladders, about 50 short runs
    .venv/bin/python benchmarks/lr_boundary.py --sweep FILE --workers 2 --tolerance 0.1 \\
        --lr-min 1e-3 --lr-max 0.1 --lr-points 9 --workdir DIR   # --lr-points 0: the sweep's own LRs only

For each ladder, in one store: the boundary search first (counting every run it needs, including points
already in the store, which it reuses instead of training), then the full grid over the same ladder (which
skips the points already trained: same config hashes), then every variant judged on the full grid with the
same rule (``tracking.compare.max_stable_lr``, what ``normlight compare`` reports). The ladders share some LRs
(1e-3, 1e-2, 0.1), so the second ladder reuses those runs of the first; the report says how many. Writes
``benchmarks/results/lr_boundary.{json,md}`` after each ladder; ``--workdir`` keeps the store, so an interrupted
run resumes. Run counts and LRs only; no timing is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def finished_runs(sweep, uri: str) -> dict:
    """{config hash: run} of the sweep's FINISHED runs in the store."""
    from normlight.tracking import sweep_runs

    c = sweep_runs.client(uri)
    exp = c.get_experiment_by_name(sweep.experiment)
    if exp is None:
        return {}
    return {
        r.data.tags.get(sweep_runs.HASH_TAG): r
        for r in sweep_runs.sweep_runs(c, exp.experiment_id, sweep.name)
        if r.info.status == "FINISHED"
    }


def grid_answer(sweep, uri: str, lr_key: str, metric: str, tolerance: float) -> dict:
    """{variant label: (max stable LR over every LR of ``sweep``'s grid, {lr: mean final metric or None when a
    seed diverged or did not finish})}."""
    from normlight.sweep import search
    from normlight.tracking.compare import max_stable_lr

    finished = finished_runs(sweep, uri)
    combos, seed_axis, seeds = search.variants(sweep, lr_key)
    out = {}
    for v in combos:
        points, means = [], {}
        for lr in search.ladder(sweep, lr_key):
            runs = search.probe_runs(sweep, v, lr_key, lr, seed_axis, seeds)
            at_lr = search._points(finished, runs, lr, metric)
            points += at_lr
            ok = [val for _, div, val in at_lr if not div and val is not None]
            means[lr] = sum(ok) / len(ok) if len(ok) == len(at_lr) else None
        out[search.variant_label(v)] = (max_stable_lr(points, tolerance=tolerance), means)
    return out


def compare_ladder(sweep, uri: str, args, lr_key: str, lr_range: tuple | None, earlier: set) -> dict | None:
    """Search, then the full grid over the same ladder; the comparison of one ladder (None: interrupted).

    ``earlier``: config hashes of the grid points of the ladders compared before (their runs are in the store;
    counted from the plan, not the store, so a resumed run reports the same counts); this ladder's are added."""
    from normlight.sweep import plan, run_sweep, search

    lr_min, lr_max, points = lr_range or (None, None, None)
    found = search.lr_boundary(
        sweep,
        uri,
        lr_key=lr_key,
        lr_min=lr_min,
        lr_max=lr_max,
        lr_points=points,
        tolerance=args.tolerance,
        metric=args.metric,
        workers=args.workers,
    )
    if "variants" not in found:
        return None
    search.print_boundary(found)
    ladder = found["ladder"]
    grid_sweep = dataclasses.replace(sweep, grid={**sweep.grid, lr_key: ladder})
    combos, seed_axis, seeds = search.variants(grid_sweep, lr_key)
    by_label = {search.variant_label(v): v for v in combos}
    code = run_sweep(grid_sweep, uri, workers=args.workers)  # the rest of the grid
    grid_hashes = [r.hash for r in plan(grid_sweep)]
    grid = grid_answer(grid_sweep, uri, lr_key, args.metric, args.tolerance)
    rows = []
    for label, v in found["variants"].items():
        probes = [
            r for lr in v["probed"] for r in search.probe_runs(sweep, by_label[label], lr_key, lr, seed_axis, seeds)
        ]
        answer, means = grid[label]
        finite = {lr: m for lr, m in means.items() if m is not None}
        best_lr = min(finite, key=finite.get) if finite else None
        rows.append(
            {
                "variant": label,
                "search_max_stable_lr": v["max_stable_lr"],
                "grid_max_stable_lr": answer,
                "same": v["max_stable_lr"] == answer,
                "search_runs": v["runs"],
                "search_runs_reused": sum(r.hash in earlier for r in probes),
                "search_lrs": v["probed"],
                "grid_runs": len(ladder) * len(seeds),
                "grid_best_lr": best_lr,
                "grid_best_lr_probed": best_lr in v["probed"],
                f"grid_final_{args.metric}": {f"{lr:g}": m for lr, m in means.items()},
            }
        )
    probed = {
        r.hash
        for label, v in found["variants"].items()
        for lr in v["probed"]
        for r in search.probe_runs(sweep, by_label[label], lr_key, lr, seed_axis, seeds)
    }
    trained_after = sum(h not in earlier and h not in probed for h in grid_hashes)
    earlier.update(grid_hashes)
    return {
        "ladder_name": "the sweep's own LRs"
        if lr_range is None
        else f"{len(ladder)}-point log ladder over [{lr_min:g}, {lr_max:g}]",
        "ladder": ladder,
        "search_runs": found["runs"],
        "search_runs_reused": sum(r["search_runs_reused"] for r in rows),
        "grid_runs": found["grid_runs"],
        "grid_runs_trained_after_search": trained_after,
        "saved_runs": found["grid_runs"] - found["runs"],
        "all_same": all(r["same"] for r in rows),
        "search_exit_code": found["exit_code"],
        "grid_exit_code": code,
        "variants": rows,
    }


def render(result: dict) -> str:
    """The results as markdown: one section per ladder."""
    fmt = lambda x: "none" if x is None else f"{x:g}"  # noqa: E731
    lines = [
        f"# LR boundary search vs full grid: {result['sweep']}",
        "",
        f"Regenerate: `{result['command']}` (stable = no seed diverged and mean final {result['metric']} within "
        f"{result['tolerance']:.0%} of the best LR's, as `normlight compare`; the search finds the best LR by "
        "ternary search, then bisects for the boundary above it).",
        "",
    ]
    for lad in result["ladders"]:
        lines += [
            f"## {lad['ladder_name']}: {', '.join(f'{x:g}' for x in lad['ladder'])}",
            "",
            f"**{lad['search_runs']} runs** for the boundary search vs **{lad['grid_runs']}** for the grid over the "
            f"same LRs: {lad['saved_runs']} fewer ({100 * lad['saved_runs'] / lad['grid_runs']:.0f}% saved). "
            f"Same max stable LR for every variant: **{'yes' if lad['all_same'] else 'no'}**.",
            "",
        ]
        if lad["search_runs_reused"]:
            lines += [
                f"{lad['search_runs_reused']} of the search's {lad['search_runs']} runs are grid points of the ladder "
                "above (same LR, same config hash): the store already had them, so they were reused, not retrained; "
                "they are counted in the search's runs all the same. The grid over this ladder then trained "
                f"{lad['grid_runs_trained_after_search']} more runs.",
                "",
            ]
        lines += [
            "| variant | max stable LR (search) | max stable LR (grid) | same | search runs | LRs probed |",
            "|---|---|---|---|---|---|",
        ]
        for r in lad["variants"]:
            probed = ", ".join(f"{x:g}" for x in r["search_lrs"])
            lines.append(
                f"| {r['variant']} | {fmt(r['search_max_stable_lr'])} | {fmt(r['grid_max_stable_lr'])} | "
                f"{'yes' if r['same'] else 'NO'} | {r['search_runs']} | {probed} |"
            )
        lines.append("")
        for r in lad["variants"]:
            if not r["same"]:
                where = "an LR the search probed" if r["grid_best_lr_probed"] else "an LR the search did not probe"
                lines += [
                    f"{r['variant']} differs: the grid's best final {result['metric']} is at lr "
                    f"{fmt(r['grid_best_lr'])}, {where}, so the search's reference loss is another one (the "
                    "assumption stated in normlight/sweep/search.py does not hold here).",
                    "",
                ]
        metric_key = f"grid_final_{result['metric']}"
        lrs = list(lad["variants"][0][metric_key]) if lad["variants"] else []
        lines += [
            f"Grid: mean final {result['metric']} per LR (- = a seed diverged or did not finish; * = probed by "
            "the search).",
            "",
            "| variant | " + " | ".join(lrs) + " |",
            "|---|" + "---|" * len(lrs),
        ]
        for r in lad["variants"]:
            probed = {f"{x:g}" for x in r["search_lrs"]}
            cells = [
                ("-" if m is None else f"{m:.3f}") + (" *" if lr in probed else "") for lr, m in r[metric_key].items()
            ]
            lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison for each ladder and write the results files."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sweep", default=str(ROOT / "configs" / "sweeps" / "placement_lr_quick.yaml"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tolerance", type=float, default=0.1, help="normlight compare's --stable-tolerance")
    p.add_argument("--metric", default="val/loss")
    p.add_argument("--lr-min", type=float, default=1e-3, help="the denser ladder's lowest LR")
    p.add_argument("--lr-max", type=float, default=0.1, help="the denser ladder's highest LR")
    p.add_argument("--lr-points", type=int, default=9, help="the denser ladder's size (0: the sweep's LRs only)")
    p.add_argument("--out", default=str(RESULTS / "lr_boundary"), help="results path without extension")
    p.add_argument("--workdir", default=None, help="where the store goes (default: a new temporary folder)")
    args = p.parse_args(argv)

    from normlight.sweep import load_sweep

    sweep_path = Path(args.sweep).resolve()
    sweep = load_sweep(sweep_path)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lr-boundary-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).resolve()
    os.chdir(work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    command = ".venv/bin/python benchmarks/lr_boundary.py"
    if args.lr_points:
        command += f" --lr-min {args.lr_min:g} --lr-max {args.lr_max:g} --lr-points {args.lr_points}"
    result = {
        "sweep": str(sweep_path.relative_to(ROOT)) if ROOT in sweep_path.parents else args.sweep,
        "command": command,
        "tolerance": args.tolerance,
        "metric": args.metric,
        "ladders": [],
    }
    ranges = [None] + ([(args.lr_min, args.lr_max, args.lr_points)] if args.lr_points else [])
    earlier: set = set()
    for lr_range in ranges:
        lad = compare_ladder(sweep, uri, args, "model.lr", lr_range, earlier)
        if lad is None:
            print("error: the search was interrupted; re-run with the same --workdir to resume", file=sys.stderr)
            return 1
        result["ladders"].append(lad)
        result["all_same"] = all(x["all_same"] for x in result["ladders"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        out.with_suffix(".md").write_text(render(result))
        print(render(result))
    return 0 if result["all_same"] else 1


if __name__ == "__main__":
    sys.exit(main())
