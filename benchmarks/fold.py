"""Eval latency before and after ``normlight.fold`` (batch-statistic norms merged into convs/linears).

Usage::

    .venv/bin/python benchmarks/fold.py           # writes benchmarks/results/fold.{json,md}
    .venv/bin/python benchmarks/fold.py --quick   # fewer repeats, to check the script

Method: each model gets a few training-mode forwards (so running statistics are not their init), then
``fold`` makes an eval-mode copy. Unfolded and folded models are timed in eval mode under
``torch.inference_mode`` on the same input with one thread, alternating (round-robin) so a shared
machine's load hits both alike. Reported per model: the best (min) and the median of ``repeats`` rounds;
the speedup ``unfolded / folded`` is taken from the best times (the least disturbed by other processes,
as ``timeit`` recommends), and the largest output difference.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import normlight
from normlight.models.fold import is_batch_stat_norm

RESULTS = Path(__file__).parent / "results"
CASES = [  # (label, model name, kwargs, input shape)
    ("resnet20 batchnorm", "resnet20", dict(norm="batchnorm"), (8, 3, 32, 32)),
    (
        "resnet20 batchnorm + WS",
        "resnet20",
        dict(norm="batchnorm", weight_standardization=True, norm_kwargs={"momentum": None}),
        (8, 3, 32, 32),
    ),
    ("resnet18 batchnorm", "resnet18", dict(norm="batchnorm", num_classes=10), (8, 3, 64, 64)),
    ("resnet50 batchnorm", "resnet50", dict(norm="batchnorm", num_classes=10), (4, 3, 64, 64)),
    ("vit-tiny repbn", "vit-tiny", dict(norm="repbn"), (8, 3, 32, 32)),
]


def count_norms(model) -> int:
    """Batch-statistic norms, not counting those nested in another (RepBN's inner BatchNorm)."""
    names = [n for n, m in model.named_modules() if is_batch_stat_norm(m)]
    return sum(1 for n in names if not any(n.startswith(o + ".") for o in names if o != n))


def timed(model, x, n=3) -> float:
    """Seconds per forward (mean of ``n`` calls)."""
    t = time.perf_counter()
    for _ in range(n):
        model(x)
    return (time.perf_counter() - t) / n


def run(repeats: int) -> list[dict]:
    """Time every case; one row per model."""
    torch.set_num_threads(1)  # on a shared box extra threads only add waiting
    rows = []
    for label, name, kw, shape in CASES:
        torch.manual_seed(0)
        model = normlight.create_model(name, **kw).train()
        with torch.no_grad():
            for _ in range(5):
                model(torch.randn(*shape) * 2 + 0.5)
        folded = normlight.fold(model)
        model.eval()
        x = torch.randn(*shape)
        with torch.inference_mode():
            diff = (model(x) - folded(x)).abs().max().item()
            for m in (model, folded):
                timed(m, x, 2)  # warmup
            times = {"unfolded": [], "folded": []}
            for _ in range(repeats):
                times["unfolded"].append(timed(model, x))
                times["folded"].append(timed(folded, x))
        before, after = min(times["unfolded"]), min(times["folded"])
        med_before, med_after = statistics.median(times["unfolded"]), statistics.median(times["folded"])
        rows.append(
            dict(
                model=label,
                batch=shape[0],
                input=list(shape[1:]),
                norms=count_norms(model),
                folded=len(folded.folded_norms),
                unfolded_ms=before * 1e3,
                folded_ms=after * 1e3,
                speedup=before / after,
                unfolded_median_ms=med_before * 1e3,
                folded_median_ms=med_after * 1e3,
                speedup_median=med_before / med_after,
                max_abs_diff=diff,
            )
        )
        print(
            f"{label:28s} folded {len(folded.folded_norms):3d}  unfolded {before * 1e3:8.2f} ms  "
            f"folded {after * 1e3:8.2f} ms  speedup x{before / after:5.2f}  max|diff| {diff:.2e}",
            flush=True,
        )
    return rows


def write(rows: list[dict], repeats: int) -> None:
    """benchmarks/results/fold.json and fold.md."""
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__,
        normlight=normlight.__version__,
        machine=platform.machine(),
        processor=platform.processor(),
        threads=torch.get_num_threads(),
        repeats=repeats,
        device="cpu",
        dtype="float32",
        load_average=[round(v, 1) for v in os.getloadavg()],
        cpus=os.cpu_count(),
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fold.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
    lines = [
        "# Eval latency before / after `normlight.fold`",
        "",
        f"{meta['date']}, torch {meta['torch']}, CPU ({meta['machine']}, {meta['cpus']} cores, load average "
        f"{meta['load_average'][0]} at the end: shared machine, absolute times are inflated, ratios are what counts), "
        f"{meta['threads']} thread, float32, {repeats} round-robin rounds of 3 forwards; `benchmarks/fold.py`.",
        "",
        "| model | batch x input | batch-stat norms | folded | unfolded ms (best) | folded ms (best) | speedup (best) "
        "| speedup (median) | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} x {'x'.join(map(str, r['input']))} | {r['norms']} | {r['folded']} | "
            f"{r['unfolded_ms']:.2f} | {r['folded_ms']:.2f} | x{r['speedup']:.2f} | x{r['speedup_median']:.2f} | "
            f"{r['max_abs_diff']:.1e} |"
        )
    lines += [
        "",
        "Speedup = unfolded / folded time. In vit-tiny the final norm reads the residual stream and stays; "
        "the block norms fold into the qkv and fc1 linears that read them. Folding saves one per-channel pass per norm (and, with WS, the per-forward kernel standardization); convolutions dominate CPU time, so the gain is modest.",
    ]
    (RESULTS / "fold.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    """Parse options, run, write results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 15")
    args = parser.parse_args()
    repeats = 3 if args.quick else 15
    write(run(repeats), repeats)


if __name__ == "__main__":
    main()
