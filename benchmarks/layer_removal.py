"""How many layers of a CPU-trained gpt-tiny can be removed for <= 5% validation-loss increase: Pre-LN vs LayerNorm
Scaling vs Peri-LN (issue 21; a first look at the Curse of Depth claim that deep Pre-LN layers are near-identity).

Usage::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/layer_removal.py            # train + analyze + write
    .venv/bin/python benchmarks/layer_removal.py --skip-train                            # analyze what is trained

Method
- training: ``normlight sweep configs/sweeps/removal_tiny.yaml`` in ``--workdir`` (default runs/study): gpt-tiny
  (6 layers, d=256, 4 heads, 4.9M parameters) on CPython's byte-level pydoc text (block 256, batch 16), AdamW lr 1e-3,
  20 warm-up steps then cosine, gradient clip 1.0, 200 steps, seed 0, placements pre / lns / peri, LayerNorm;
  a re-run skips finished runs;
- analysis: ``normlight analyze --ckpt_path <run>/last.ckpt`` on the first ``--batches`` validation batches (16 x 256
  tokens each; the last 10% of the text, never trained on), removal orders bi / angular / random (mean of 3
  orders) / sublayer_bi, logged into each training run;
- result: for each placement, ``max_removed/<score>`` = the largest k such that removing 1..k blocks in that order
  keeps the loss within 5% of the full model's, plus the curves; written to
  benchmarks/results/layer_removal.{json,md} and docs/img/layer_removal.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SWEEP = ROOT / "configs" / "sweeps" / "removal_tiny.yaml"
PLACEMENTS = ("pre", "lns", "peri")
SCORES = ("bi", "angular", "random", "sublayer_bi")
ANALYSES = "block_influence,angular_distance,logit_lens,removal_curve"


def train(workdir: Path) -> None:
    """Run the sweep (finished runs are skipped)."""
    cmd = [sys.executable, "-m", "normlight", "sweep", str(SWEEP), "--workers", "3"]
    subprocess.run(cmd, cwd=workdir, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def analyze(workdir: Path, batches: int) -> dict[str, dict]:
    """``normlight analyze`` every finished run's last checkpoint (one process per run, in parallel); the report
    (analysis.json) per placement."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("removal-tiny")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED' and tags.sweep = 'removal_tiny'")
    jobs = {}
    for run in runs:
        placement = run.data.tags["placement"]
        ckpts = sorted(
            (workdir / "runs" / "checkpoints" / "removal-tiny").glob(f"removal_tiny_{placement}-*/*/last.ckpt")
        )
        report = workdir / "runs" / "analyze" / f"removal_tiny_{placement}"
        cmd = [sys.executable, "-m", "normlight", "analyze", f"--ckpt_path={ckpts[-1]}", f"--batches={batches}"]
        cmd += [f"--analyses={ANALYSES}", f"--tracking-uri={uri}", f"--out={report}"]
        cmd += ["--options={removal_curve: {scores: [%s]}}" % ", ".join(SCORES)]
        log = open(workdir / f"analyze_{placement}.log", "w")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env)
        jobs[placement] = (proc, run, ckpts[-1], report)
    out = {}
    for placement, (proc, run, ckpt, report) in jobs.items():
        if proc.wait() != 0:
            raise SystemExit(f"normlight analyze failed for {placement}; see {workdir}/analyze_{placement}.log")
        data = json.loads((report / "analysis.json").read_text())
        out[placement] = {
            "run_id": run.info.run_id,
            "val_loss": run.data.metrics.get("val/loss"),
            "checkpoint": str(ckpt.relative_to(workdir)),
            **data,
        }
    return out


def removal_order(sets: list[str]) -> list[int]:
    """The block added at each step of nested removed sets written as "2", "2,4", "1,2,4", ..."""
    order, seen = [], set()
    for text in sets:
        now = {int(v) for v in text.split(",")}
        order += sorted(now - seen)
        seen = now
    return order


def summarize(reports: dict[str, dict]) -> dict:
    """Per placement: final val loss, baseline loss on the analysis batches, max_removed per score, curves, BI."""
    rows = {}
    for placement in PLACEMENTS:
        if placement not in reports:
            continue
        res = {r["name"]: r for r in reports[placement]["results"]}
        rc, bi = res["removal_curve"], res["block_influence"]
        rows[placement] = {
            "val_loss_at_end_of_training": reports[placement]["val_loss"],
            "analysis_baseline_loss": rc["scalars"]["baseline/loss"],
            "max_removed": {s: int(rc["scalars"][f"max_removed/{s}"]) for s in SCORES},
            "rel_loss": {s: rc["series"][f"rel_loss/{s}"]["values"] for s in SCORES},
            "block_influence": bi["series"]["bi/block"]["values"],
            "bi_order": removal_order([r["layers"] for r in rc["tables"]["curve"] if r["score"] == "bi"][1:]),
            "logit_lens": res["logit_lens"]["series"]["loss/lens"]["values"],
            "analysis_cost": reports[placement]["meta"]["cost"],
            "run_id": reports[placement]["run_id"],
            "checkpoint": reports[placement]["checkpoint"],
        }
    return rows


def write(rows: dict, meta: dict) -> None:
    """benchmarks/results/layer_removal.{json,md} and docs/img/layer_removal.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "layer_removal.json").write_text(json.dumps({"meta": meta, "placements": rows}, indent=1))
    md = [
        "# Removable depth of gpt-tiny: Pre-LN vs LayerNorm Scaling vs Peri-LN",
        "",
        f"Regenerate: `{meta['command']}`. Setup: {meta['setup']}",
        "",
        "Blocks removable (of 6; `sublayer_bi`: attention / MLP sub-layers of 12) with the validation loss within 5% "
        "of the full model's for every k up to that count, per removal order (`random`: mean loss of 3 seeded orders):",
        "",
        "| placement | val loss (end of training) | loss on analysis batches | " + " | ".join(SCORES) + " |",
        "|---|---|---|" + "---|" * len(SCORES),
    ]
    for p, r in rows.items():
        md.append(
            f"| {p} | {r['val_loss_at_end_of_training']:.4f} | {r['analysis_baseline_loss']:.4f} | "
            + " | ".join(str(r["max_removed"][s]) for s in SCORES)
            + " |"
        )
    md += ["", "Relative loss increase after removing k blocks (k = 0..5), BI order:", ""]
    md += ["| placement | " + " | ".join(f"k={k}" for k in range(6)) + " | BI removal order |", "|---|" + "---|" * 7]
    for p, r in rows.items():
        md.append(
            f"| {p} | "
            + " | ".join(f"{v:+.3f}" for v in r["rel_loss"]["bi"])
            + f" | {' > '.join(map(str, r['bi_order']))} |"
        )
    md += ["", "Block Influence per block (1 - cos(h_in, h_out)):", ""]
    md += ["| placement | " + " | ".join(f"block {i}" for i in range(6)) + " |", "|---|" + "---|" * 6]
    for p, r in rows.items():
        md.append(f"| {p} | " + " | ".join(f"{v:.4f}" for v in r["block_influence"]) + " |")
    md += ["", "![removal curves](../../docs/img/layer_removal.png)", ""]
    (RESULTS / "layer_removal.md").write_text("\n".join(md) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for p, r in rows.items():
        (line,) = axes[0].plot(range(6), r["rel_loss"]["bi"], marker="o", label=f"{p} (BI order)")
        axes[0].plot(
            range(6), r["rel_loss"]["random"], ls=":", color=line.get_color(), label=f"{p} (random, mean of 3)"
        )
        axes[1].plot(range(6), r["block_influence"], marker="o", color=line.get_color(), label=p)
    axes[0].axhline(0.05, color="k", lw=0.8, ls="--")
    axes[0].set_yscale("symlog", linthresh=0.05)  # linear up to +5%, logarithmic above
    axes[0].set_ylim(bottom=0.0)
    axes[0].set_xlabel("blocks removed")
    axes[0].set_ylabel("relative val-loss increase")
    axes[0].set_title("gpt-tiny: loss vs blocks removed (dashed: +5%)")
    axes[1].set_xlabel("block")
    axes[1].set_ylabel("block influence 1 - cos(h_in, h_out)")
    axes[1].set_title("block influence per block")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
    fig.savefig(ROOT / "docs" / "img" / "layer_removal.png", dpi=110)
    plt.close(fig)


def main() -> int:
    """Train (unless --skip-train), analyze, write the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=ROOT / "runs" / "study")
    p.add_argument("--skip-train", action="store_true", help="analyze the finished runs only")
    p.add_argument("--batches", type=int, default=4, help="validation batches for the analysis (default 4)")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_train:
        train(args.workdir)
    rows = summarize(analyze(args.workdir, args.batches))
    meta = {
        "command": "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/layer_removal.py",
        "setup": "gpt-tiny (6 x d256), pydoc bytes, block 256, batch 16, AdamW 1e-3, 20 warm-up + cosine, "
        f"200 steps, seed 0 (configs/sweeps/removal_tiny.yaml); analysis on {args.batches} validation batches of "
        "16 x 256 tokens; removal without healing.",
    }
    write(rows, meta)
    print((RESULTS / "layer_removal.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
