"""Model-level cost of each norm: tokens-heavy GPT and ViT training steps, eager vs fast vs compiled norms.

Usage::

    .venv/bin/python benchmarks/norm_share.py            # full run (~12 min on a quiet 2-core CPU, inductor cache warm)
    .venv/bin/python benchmarks/norm_share.py --quick    # tiny shapes, 2 rounds: checks the script
    .venv/bin/python benchmarks/norm_share.py --norms layernorm rmsnorm dyt --modes fast compiled

Writes benchmarks/results/norm_share.{json,md}.

Where norms matter: small width, many tokens (8192 per step), small vocabulary, so the matmuls do not
hide the norms. GPT: ``gpt-nano`` shape at depth 2, dim 256, 4 heads, vocabulary 256, batch 32 x 256
tokens. ViT: depth 2, dim 192, 3 heads, 32 px images in 2 px patches (256 tokens + cls), batch 32.
One step = forward, cross-entropy, backward, AdamW, float32, placement ``pre``.

Per model and norm, the modes ``eager`` (reference code), ``fast`` (default) and ``compiled``
(``compile_norms``) are timed in interleaved rounds in one process (CPU time of 1 thread); the norm's
share of the step is ``1 - t(identity) / t(norm)`` in the same mode: the time the norm adds, measured
against the same model with every norm site an identity.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import normlight
from normlight import plugins
from normlight.norms import fast

RESULTS = Path(__file__).parent / "results"
MODES = ("eager", "fast", "compiled")


def models(quick: bool, batch: int = 32) -> dict:
    """(preset, builder kwargs, batch shape) per model family (``batch`` sequences / images per step)."""
    if quick:
        gpt = dict(depth=1, dim=64, num_heads=2, vocab_size=64, max_seq_len=32)
        vit = dict(depth=1, dim=64, num_heads=2, img_size=16, patch_size=4, num_classes=10)
        return {"gpt": ("gpt-nano", gpt, (4, 32)), "vit": ("vit-tiny", vit, 4)}
    gpt = dict(depth=2, dim=256, num_heads=4, vocab_size=256, max_seq_len=256)
    vit = dict(depth=2, dim=192, num_heads=3, img_size=32, patch_size=2, num_classes=10)
    return {"gpt": ("gpt-nano", gpt, (batch, 256)), "vit": ("vit-tiny", vit, batch)}


def make_step(family, preset, kwargs, shape, norm, mode):
    """A closure running one training step; returns (step, compile seconds of its first call)."""
    torch.manual_seed(0)
    model = normlight.create_model(preset, norm=norm, placement="pre", **kwargs).train()
    if mode == "eager":
        fast.set_fast_norms(model, False)
    elif mode == "compiled":
        fast.compile_norms(model)
    g = torch.Generator().manual_seed(0)
    if family == "gpt":
        data = torch.randint(0, kwargs["vocab_size"], (shape[0], shape[1] + 1), generator=g)
        x, y = data[:, :-1], data[:, 1:]
    else:
        x = torch.randn(shape, 3, kwargs["img_size"], kwargs["img_size"], generator=g)
        y = torch.randint(0, kwargs["num_classes"], (shape,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
        opt.step()

    before = fast.compile_stats()["seconds"]
    step()
    return step, fast.compile_stats()["seconds"] - before


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--norms", nargs="+", default=None, help="default: every built-in norm")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32, help="sequences (GPT) / images (ViT) per step; 32 = 8192 tokens")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # CPU time of this thread is the clock: see benchmarks/norms.py
    if args.quick:
        args.rounds = 2
    names = args.norms or sorted(e.name for e in plugins.entries("norms") if e.dist == "normlight")
    names = ["identity"] + [n for n in names if n != "identity"]
    rows, t0 = [], time.perf_counter()
    for family, (preset, kwargs, shape) in models(args.quick, args.batch).items():
        steps, compile_s = {}, {}
        for name in names:
            for mode in args.modes:
                try:
                    steps[(name, mode)], compile_s[(name, mode)] = make_step(family, preset, kwargs, shape, name, mode)
                except Exception as exc:  # a norm that does not fit this model is a row, not the end
                    rows.append(
                        {"model": family, "norm": name, "mode": mode, "error": f"{type(exc).__name__}: {exc}"[:200]}
                    )
        times = {k: [] for k in steps}
        for r in range(args.rounds):
            order = list(steps.items())
            for key, step in order if r % 2 == 0 else order[::-1]:
                c0 = time.thread_time()
                step()
                times[key].append(time.thread_time() - c0)
        for (name, mode), ts in times.items():
            t = min(ts)
            base = min(times.get(("identity", mode), ts))
            ln = min(times.get(("layernorm", mode), ts))
            rows.append(
                {
                    "model": family,
                    "norm": name,
                    "mode": mode,
                    "step_s_min": round(t, 4),
                    "step_s_median": round(statistics.median(ts), 4),
                    "x_layernorm_step": round(t / ln, 3),
                    "norm_share": round(max(0.0, 1 - base / t), 3),
                    "compile_s": round(compile_s[(name, mode)], 1) if mode == "compiled" else None,
                }
            )
        print(f"{family} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "rounds": args.rounds,
        "load_average": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
        "models": {k: {"preset": v[0], **v[1], "batch": v[2]} for k, v in models(args.quick, args.batch).items()},
    }
    lines = [
        "# Norms inside models: training-step time per norm (CPU, float32, 1 thread)",
        "",
        f"{meta['date']} (load average {meta['load_average']}), torch {meta['torch']}, batch {args.batch}, min over "
        f"{args.rounds} interleaved rounds; produced by "
        "`benchmarks/norm_share.py`. `x LN step` = step time / the layernorm model's step time in the same mode; "
        "`norm share` = 1 - t(identity model) / t(this model): the part of the step the norms take.",
        "",
        "| model | norm | mode | step s | x LN step | norm share | compile s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['norm']} | {r['mode']} | failed: {r['error']} | | | |")
            continue
        cs = "" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        lines.append(
            f"| {r['model']} | {r['norm']} | {r['mode']} | {r['step_s_min']:.3f} | {r['x_layernorm_step']:.2f} | "
            f"{100 * r['norm_share']:.0f}% | {cs} |"
        )
    md = "\n".join(lines) + "\n"
    print(md)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "norm_share.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (args.out / "norm_share.md").write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
