"""Why DyT stalls on the quickstart's gpt-nano, and what makes it train: alpha0 and warm-up, 3 seeds each.

Usage::

    .venv/bin/python benchmarks/dyt_quickstart.py              # writes benchmarks/results/dyt_quickstart.{json,md}
    .venv/bin/python benchmarks/dyt_quickstart.py --jobs 1     # one run at a time (default: 2 processes)

Every run is the quickstart's GPT entry (``configs/quickstart.yaml``: gpt-nano, Pre-LN placement, 400 steps of
16 x 64 pydoc bytes, AdamW lr 3e-3) with a real Lightning Trainer, one thread per run and no MLflow logger;
only the norm, its options and ``warmup_steps`` change. A callback records, every 25 steps, each norm's alpha,
input std and tanh saturation (the share of elements with |alpha x| > 2, where tanh' < 0.07), and the gradient
norm reaching the blocks. The byte-unigram perplexity (train-split byte frequencies, add-one smoothed, on the
same validation batches) is the plateau a model that ignores context reaches.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PLAN = ROOT / "configs" / "quickstart.yaml"
SEEDS = (0, 1, 2)
# (label, norm, norm_kwargs, warmup_steps, final LayerNorm, seeds): DyT's default on the old quickstart schedule
# (warm-up 30) and the new one (warm-up 200) with every seed; the diagnostic settings with the first seed only.
# "final LayerNorm" keeps DyT in the blocks and puts a LayerNorm at the final site.
SETTINGS = [
    ("dyt alpha0=auto, warm-up 30", "dyt", {"alpha_init": "auto"}, 30, False, "all"),
    ("dyt alpha0=auto, warm-up 200", "dyt", {"alpha_init": "auto"}, 200, False, "all"),
    ("dyt alpha0=auto in the blocks + final LayerNorm, warm-up 30", "dyt", {"alpha_init": "auto"}, 30, True, "first"),
    ("dyt alpha0=0.5 (paper), warm-up 30", "dyt", {"alpha_init": 0.5}, 30, False, "first"),
    ("dyt alpha0=0.5 (paper), warm-up 200", "dyt", {"alpha_init": 0.5}, 200, False, "first"),
    ("layernorm, warm-up 30", "layernorm", {}, 30, False, "first"),
    ("layernorm, warm-up 200", "layernorm", {}, 200, False, "first"),
]
EVERY = 25


def gpt_entry() -> dict:
    """The quickstart plan's GPT entry."""
    import yaml

    plan = yaml.safe_load(PLAN.read_text())
    return next(e for e in plan["runs"] if e["name"] == "gpt")


def unigram_ppl(data_args: dict, val_batches: int) -> float:
    """Perplexity of add-one-smoothed train-split byte frequencies on the first ``val_batches`` validation batches."""
    from normlight.data.text import PydocTextDataModule

    dm = PydocTextDataModule(**data_args)
    dm.setup("fit")
    counts = torch.bincount(dm.train_set.tokens, minlength=256).double() + 1.0
    logp = (counts / counts.sum()).log()
    nll, n = 0.0, 0
    for i, (_, y) in enumerate(dm.val_dataloader()):
        if i == val_batches:
            break
        nll -= float(logp[y.reshape(-1)].sum())
        n += y.numel()
    return math.exp(nll / n)


def train_one(label: str, norm: str, norm_kwargs: dict, warmup: int, final_ln: bool, seed: int) -> dict:
    """One quickstart GPT run with the given norm and warm-up; the val perplexity and the recorded internals."""
    import lightning as L

    from normlight.data.text import PydocTextDataModule
    from normlight.tasks.language import CausalLanguageModeling

    torch.set_num_threads(1)
    entry = gpt_entry()
    L.seed_everything(seed, verbose=False)
    args = {**entry["config"]["model"]["init_args"], "norm": norm, "warmup_steps": warmup, "sample_tokens": 0}
    if norm_kwargs:
        args["norm_kwargs"] = norm_kwargs
    task = CausalLanguageModeling(**args)
    if final_ln:
        task.model.norm = torch.nn.LayerNorm(task.model.norm.num_features)
    trace: list[dict] = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.hooks, self.stats = [], {}
            if trainer.global_step % EVERY:
                return
            for name, mod in pl_module.model.named_modules():
                if mod.__class__.__name__ in ("DyT", "LayerNorm"):
                    self.hooks.append(mod.register_forward_hook(self.hook(name)))

        def hook(self, name):
            def fn(mod, inputs, _out):
                x = inputs[0].detach().float()
                alpha = getattr(mod, "alpha", None)
                s = {"in_std": float(x.std())}
                if alpha is not None:
                    s["alpha"] = float(alpha)
                    s["saturated"] = float(((x * float(alpha)).abs() > 2).float().mean())
                self.stats[name] = s

            return fn

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step % EVERY == 0:
                sq = sum(
                    float(p.grad.float().square().sum())
                    for p in pl_module.model.blocks.parameters()
                    if p.grad is not None
                )
                self.grad = math.sqrt(sq)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            for h in self.hooks:
                h.remove()
            if self.stats:
                loss = float(outputs["loss"] if isinstance(outputs, dict) else outputs)
                trace.append(
                    {"step": trainer.global_step - 1, "loss": loss, "block_grad": self.grad, "norms": self.stats}
                )

    trainer_cfg = entry["config"]["trainer"]
    trainer = L.Trainer(
        **trainer_cfg,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record()],
    )
    dm = PydocTextDataModule(**entry["config"]["data"]["init_args"])
    trainer.fit(task, dm)
    return {
        "setting": label,
        "seed": seed,
        "val_ppl": float(trainer.callback_metrics["val/ppl"]),
        "trace": trace,
    }


def summary_row(run: dict) -> dict:
    """The numbers the markdown table shows for one run."""
    by_step = {t["step"]: t for t in run["trace"]}
    first, s50, s100, last = by_step[0], by_step.get(50), by_step.get(100), run["trace"][-1]
    final = "norm"
    row = {
        "val_ppl": run["val_ppl"],
        "alpha0": {k: v.get("alpha") for k, v in first["norms"].items()},
        "final_in_std": [t["norms"][final]["in_std"] for t in (first, s50, last)],
        "final_saturated": [t["norms"][final].get("saturated") for t in (first, s50, last)],
        "block_grad": [t["block_grad"] for t in (first, s100, last)],
    }
    return row


def write_markdown(data: dict) -> None:
    def fmt(v, f="{:.3g}"):
        return "-" if v is None else f.format(v)

    lines = [
        "# DyT on the quickstart's gpt-nano: alpha0 and warm-up",
        "",
        f"Regenerate: `.venv/bin/python benchmarks/dyt_quickstart.py` ({data['date']}, torch {data['torch']}). "
        "Method: see the script's docstring.",
        "",
        f"Byte-unigram perplexity on the same validation batches: **{data['unigram_ppl']:.2f}**.",
        "",
        "| setting | val ppl, seeds " + " / ".join(map(str, data["seeds"])) + " (diagnostic rows: the first) |",
        "|---|---|",
    ]
    for label, *_ in SETTINGS:
        ppls = [r["val_ppl"] for r in data["runs"] if r["setting"] == label]
        lines.append(f"| {label} | " + " / ".join(f"{p:.2f}" for p in ppls) + " |")
    lines += [
        "",
        "Internals, seed 0 (steps 0 / 50 / last recorded; saturation = share of |alpha x| > 2 at the final norm;"
        " block grad = gradient norm of all block parameters, steps 0 / 100 / last):",
        "",
        "| setting | alpha0 (attn_in, mlp_in of block 0; final) | final-norm input std | final saturation |"
        " block grad |",
        "|---|---|---|---|---|",
    ]
    for run in data["runs"]:
        if run["seed"] != data["seeds"][0]:
            continue
        r = summary_row(run)
        a = r["alpha0"]
        alphas = ", ".join(fmt(a.get(k)) for k in ("blocks.0.norm1", "blocks.0.norm2")) + "; " + fmt(a.get("norm"))
        lines.append(
            f"| {run['setting']} | {alphas} | "
            + " / ".join(fmt(v) for v in r["final_in_std"])
            + " | "
            + " / ".join(fmt(v, "{:.3f}") for v in r["final_saturated"])
            + " | "
            + " / ".join(fmt(v, "{:.1e}") for v in r["block_grad"])
            + " |"
        )
    (RESULTS / "dyt_quickstart.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="training processes at once")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    args = ap.parse_args()
    entry = gpt_entry()
    jobs = [(*s[:5], seed) for s in SETTINGS for seed in (args.seeds if s[5] == "all" else args.seeds[:1])]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(train_one, *zip(*jobs)))
    for r in runs:
        print(f"{r['setting']:<62} seed {r['seed']}: val ppl {r['val_ppl']:.2f}", flush=True)
    data = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "seeds": args.seeds,
        "unigram_ppl": unigram_ppl(
            entry["config"]["data"]["init_args"], entry["config"]["trainer"]["limit_val_batches"]
        ),
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dyt_quickstart.json").write_text(json.dumps(data, indent=1))
    write_markdown(data)
    print(f"byte-unigram ppl {data['unigram_ppl']:.2f}; wrote {RESULTS / 'dyt_quickstart.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
