"""GPU benchmark: gpt-small tokens/s and peak memory per norm, and each norm's efficiency against the
memory-bandwidth floor, side by side in one run.

Usage (on a machine with a CUDA GPU)::

    .venv/bin/python benchmarks/scale.py                       # every registered norm, bf16 autocast
    .venv/bin/python benchmarks/scale.py --norms layernorm rmsnorm dyt --batch-size 8
    .venv/bin/python benchmarks/scale.py --check-on-cpu        # tiny shapes on CPU: checks the script only

Writes benchmarks/results/scale.{json,md}. On a machine without a GPU it exits with status 2 and says so
(the numbers would mean nothing); ``--check-on-cpu`` runs the same code at gpt-nano size and writes nothing.

What is measured, per norm (one norm at a time, the same seed and data for each):

1. Training: ``create_model("gpt-small", norm=NAME)`` (12 x 768, ctx 1024, GPT-2 vocab), AdamW, autocast
   in ``--dtype`` (default bfloat16), batch ``--batch-size`` x ``--seq-len`` tokens. After ``--warmup``
   steps, the median step time over ``--steps`` steps gives tokens/s; ``torch.cuda.max_memory_allocated``
   over those steps gives peak memory. Also reported relative to layernorm.
2. The norm layer alone on the activation it sees in that model, ``x[batch*seq, 768]`` in ``--dtype``:
   median forward time and forward+backward time. The memory-bandwidth floor is the time to move the
   bytes no implementation can avoid: forward reads x and writes y (2 tensors), forward+backward also
   reads x and dy and writes dx (5 tensors in all), at the bandwidth a device-to-device copy achieves
   on this GPU (measured here, not a datasheet figure). Efficiency = floor / measured time: 100 % means
   the norm runs at copy speed; a norm that reads its input twice (statistics, then normalization)
   cannot exceed about 67 % forward.
3. The same norm layer in its three implementations, forward+backward: ``eager`` (the reference eager code,
   ``set_fast_norms(layer, False)``), ``fast`` (the default fast path) and ``compiled``
   (``compile_norms(layer)``: Triton kernels on a GPU), with the compile time of the compiled kernels.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import normlight
from normlight.norms import fast as norm_fast

RESULTS = Path(__file__).parent / "results"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def sync(device: torch.device) -> None:
    """Wait for queued kernels so that wall-clock times cover the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, reps: int) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, numel: int, dtype: torch.dtype) -> float:
    """Achievable bytes/s of a device-to-device copy (read + write) of ``numel`` elements."""
    src = torch.randn(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), device, warmup=3, reps=20)
    return 2 * src.numel() * src.element_size() / t


def train_throughput(norm: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    """tokens/s and peak memory of gpt-small (or --model) training steps with ``norm`` everywhere."""
    torch.manual_seed(0)
    model = normlight.create_model(args.model, norm=norm).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    seq = min(args.seq_len or model.max_seq_len, model.max_seq_len)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, model.vocab_size, (args.batch_size, seq + 1), generator=g).to(device)
    x, y = data[:, :-1], data[:, 1:]

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = timed(step, device, warmup=0, reps=args.steps)
    loss = float(step())
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan
    n_params = sum(p.numel() for p in model.parameters())
    model = opt = step = None  # free device memory before the next norm
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "tokens_per_s": args.batch_size * seq / t,
        "step_ms": 1e3 * t,
        "peak_mem_mib": peak,
        "final_loss": loss,
        "params": n_params,
        "seq_len": seq,
    }


def norm_efficiency(
    norm: str, args, device: torch.device, dtype: torch.dtype, dim: int, rows: int, bw: float, mode: str = "fast"
) -> dict:
    """Forward and forward+backward time of the norm alone vs the memory-bandwidth floor (``mode``: eager,
    fast or compiled implementation)."""
    torch.manual_seed(0)
    layer = normlight.create_norm(norm, dim, layer_idx=0, num_layers=12, site="mlp_in").to(device).train()
    if mode == "eager":
        norm_fast.set_fast_norms(layer, False)
    elif mode == "compiled":
        norm_fast.compile_norms(layer)
    compile_before = norm_fast.compile_stats()["seconds"]
    x = torch.randn(rows, dim, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn_like(x)
    nbytes = x.numel() * x.element_size()

    def fwd():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            layer(x)

    def fwd_bwd():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = layer(x)
        out.backward(dy)
        x.grad = None

    t_f = timed(fwd, device, warmup=3, reps=args.norm_reps)
    t_fb = timed(fwd_bwd, device, warmup=3, reps=args.norm_reps)
    floor_f, floor_fb = 2 * nbytes / bw, 5 * nbytes / bw
    out = {"fwd_us": 1e6 * t_f, "fwd_eff": floor_f / t_f, "fwd_bwd_us": 1e6 * t_fb, "fwd_bwd_eff": floor_fb / t_fb}
    if mode != "fast":
        out = {f"{mode}_fwd_bwd_us": out["fwd_bwd_us"], f"{mode}_fwd_bwd_eff": out["fwd_bwd_eff"]}
    if mode == "compiled":
        out["compile_s"] = norm_fast.compile_stats()["seconds"] - compile_before
    return out


def markdown(meta: dict, rows: list[dict]) -> str:
    """The side-by-side table written to scale.md."""
    base = next((r["tokens_per_s"] for r in rows if r["norm"] == "layernorm" and "tokens_per_s" in r), None)
    lines = [
        f"# {meta['model']} per norm on {meta['device_name']} ({meta['dtype']} autocast)",
        "",
        f"{meta['model']}, batch {meta['batch_size']} x {meta['seq_len']} tokens, AdamW; norm alone on "
        f"x[{meta['norm_rows']}, {meta['dim']}]; copy bandwidth {meta['copy_bandwidth_gbs']:.0f} GB/s. "
        f"Written {meta['date']} by benchmarks/scale.py.",
        "",
        "Norm fwd+bwd in three implementations: eager = reference code, fast = default fast path, compiled = "
        "`compile_norms` (Triton); eff = bandwidth floor / time.",
        "",
        "| norm | tokens/s | vs layernorm | peak MiB | norm fwd us | fwd eff | norm fwd+bwd us (fast) | fwd+bwd eff "
        "| eager fwd+bwd us (eff) | compiled fwd+bwd us (eff) | compile s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['norm']} | failed: {r['error']} | | | | | | | | | |")
            continue
        rel = f"{r['tokens_per_s'] / base:.2f}" if base else "n/a"
        other = [
            f"{r[f'{m}_fwd_bwd_us']:.1f} ({100 * r[f'{m}_fwd_bwd_eff']:.0f}%)" if f"{m}_fwd_bwd_us" in r else "n/a"
            for m in ("eager", "compiled")
        ]
        cs = f"{r['compile_s']:.1f}" if "compile_s" in r else "n/a"
        lines.append(
            f"| {r['norm']} | {r['tokens_per_s']:.0f} | {rel} | {r['peak_mem_mib']:.0f} | {r['fwd_us']:.1f} | "
            f"{100 * r['fwd_eff']:.0f}% | {r['fwd_bwd_us']:.1f} | {100 * r['fwd_bwd_eff']:.0f}% | {other[0]} | "
            f"{other[1]} | {cs} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (2 when no GPU is available)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--norms", nargs="+", default=None, help="norm names (default: every registered norm)")
    ap.add_argument("--model", default="gpt-small")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=None, help="default: the model's context (1024 for gpt-small)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--norm-reps", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--modes",
        nargs="*",
        choices=("eager", "compiled"),
        default=["eager", "compiled"],
        help="norm implementations timed besides the fast path (compiled: Triton kernels on a GPU)",
    )
    ap.add_argument(
        "--check-on-cpu",
        action="store_true",
        help="run gpt-nano shapes on CPU to check this script; prints the table, writes nothing",
    )
    args = ap.parse_args(argv)

    if args.check_on_cpu:
        device = torch.device("cpu")
        args.model, args.batch_size, args.warmup, args.steps, args.norm_reps = "gpt-nano", 2, 1, 2, 3
        torch.set_num_threads(1)  # tiny shapes: extra threads only spin on a shared CPU
    elif torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        print(
            "benchmarks/scale.py needs a GPU: torch.cuda.is_available() is False on this machine. It measures "
            "GPU tokens/s, peak GPU memory and memory-bandwidth efficiency, which mean nothing on a CPU. Run it "
            "on a CUDA machine (see docs/scale-out.md), or pass --check-on-cpu to check the script itself.",
            file=sys.stderr,
        )
        return 2
    dtype = DTYPES[args.dtype]
    norms = args.norms or normlight.list_norms()
    probe = normlight.create_model(args.model)
    dim, seq = probe.spec["dim"], min(args.seq_len or probe.max_seq_len, probe.max_seq_len)
    del probe
    rows_n = args.batch_size * seq
    bw = copy_bandwidth(device, max(rows_n * dim, 2**24), dtype)
    meta = {
        "model": args.model,
        "batch_size": args.batch_size,
        "seq_len": seq,
        "dim": dim,
        "norm_rows": rows_n,
        "dtype": args.dtype,
        "copy_bandwidth_gbs": bw / 1e9,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "normlight": normlight.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    rows = []
    for name in norms:
        row = {"norm": name}
        try:  # a norm that fails (e.g. out of memory) is a row in the table, not the end of the run
            row.update(train_throughput(name, args, device, dtype))
            row.update(norm_efficiency(name, args, device, dtype, dim, rows_n, bw))
            for mode in args.modes:
                row.update(norm_efficiency(name, args, device, dtype, dim, rows_n, bw, mode))
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = markdown(meta, rows)
    print(table)
    if not args.check_on_cpu:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (args.out / "scale.md").write_text(table)
        print(f"wrote {args.out / 'scale.json'} and {args.out / 'scale.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
