"""E2: Post-LN needs learning-rate warm-up, Pre-LN does not (Xiong et al. 2020).

Grid: placement {post, pre} x warm-up {0, W} x learning rate (Adam), a 6-layer byte-level GPT on pydoc text.
The verdict is decided at the largest learning rate of the grid (fixed here): warm-up must help Post-LN
(lower final val loss, separated seeds or Welch p < 0.05; a diverged run counts as +inf) while Pre-LN without
warm-up stays within ``PRE_TOLERANCE`` nats of Pre-LN with warm-up.
"""

from __future__ import annotations

import math

from normlight.studies.base import Analysis, Plot, RunRecord, Scale, Study, Table, Verdict
from normlight.studies.common import GPT_BASE, SMOKE_FIXED, grid_for, seeds_axis
from normlight.studies.records import pm, select
from normlight.studies.verdict import lower_is_better, mean_std

MIN_SEEDS = 2  # one seed per cell decides nothing
PRE_TOLERANCE = 0.05  # nats: "comparable results" for Pre-LN without warm-up
SCALES = {
    "smoke": dict(depth=2, steps=2, warmup=1, lrs=[1e-2]),
    "cpu": dict(depth=6, steps=300, warmup=100, lrs=[1e-3, 1e-2]),
    "gpu": dict(depth=12, steps=5000, warmup=1000, lrs=[3e-4, 1e-3, 3e-3]),
}


def final_loss(r: RunRecord) -> float:
    """Final val loss; +inf for a diverged or failed run (it did not reach any loss)."""
    v = r.final.get("val/loss")
    return math.inf if r.diverged or r.status != "FINISHED" or v is None or not math.isfinite(v) else v


class WarmupStudy(Study):
    """Post-LN vs Pre-LN with and without warm-up."""

    name = "e2_warmup"
    title = "Post-LN needs warm-up, Pre-LN does not"
    claim = (
        "the expected gradients of the parameters near the output layer are large [for Post-LN] ... "
        "Pre-LN Transformers without the warm-up stage can reach comparable results with baselines"
    )
    paper = "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture (arXiv:2002.04745)"
    rule = (
        "At the largest learning rate of the grid: (a) Post-LN with warm-up ends with a lower final val loss than "
        "Post-LN without (seed ranges separate or Welch p < 0.05; a diverged run counts as +inf) and (b) Pre-LN "
        f"without warm-up ends within {PRE_TOLERANCE} nats of Pre-LN with warm-up (mean over seeds) or lower. "
        "Reproduced if (a) and (b); not reproduced if (a) points the other way or (b) fails; else inconclusive "
        f"(also with fewer than {MIN_SEEDS} seeds per cell)."
    )
    key_metric = "Post-LN loss cost of no warm-up (nats)"

    def sweeps(self, scale: Scale, seeds: int) -> list[dict]:
        """One sweep: placement x warm-up x learning rate x seed."""
        s = SCALES[scale]
        fixed = {"model.model_kwargs": {"depth": s["depth"]}, "trainer.max_steps": s["steps"]}
        fixed |= SMOKE_FIXED if scale == "smoke" else {"trainer.val_check_interval": s["steps"] // 3}
        return [
            {
                "name": "warmup",
                "description": f"{s['depth']}-layer GPT, Post/Pre-LN x warm-up x LR, {s['steps']} steps",
                "base": GPT_BASE,
                "grid": grid_for(
                    scale,
                    {
                        "model.placement": ["post", "pre"],
                        "model.warmup_steps": [0, s["warmup"]],
                        "model.lr": s["lrs"],
                        "seed_everything": seeds_axis(seeds),
                    },
                ),
                "fixed": fixed,
            }
        ]

    def estimated_cpu_minutes(self, scale: Scale) -> float:
        """24 runs of a 6-layer GPT at cpu scale."""
        return {"smoke": 1, "cpu": 8, "gpu": 600}[scale]

    def analyze(self, runs: list[RunRecord], extra: dict, scale: Scale) -> Analysis:
        """Loss table per (placement, warm-up, LR), the verdict at the largest LR, loss-vs-LR plot."""
        s = SCALES[scale]
        lrs = sorted({float(r.labels["model.lr"]) for r in runs}) or s["lrs"]
        warm = s["warmup"]
        rows = []
        for p in ("post", "pre"):
            for w in (0, warm):
                for lr in lrs:
                    sel = select(runs, model__placement=p, model__warmup_steps=w, model__lr=lr)
                    losses = [final_loss(r) for r in sel]
                    rows.append([p, w, lr, pm([x for x in losses if math.isfinite(x)]), sum(map(math.isinf, losses))])
        table = Table(
            "Final val loss (nats/byte) over seeds",
            ["placement", "warm-up steps", "lr", "val loss", "diverged/failed"],
            rows,
        )
        lr = max(s["lrs"])
        cell = {
            (p, w): [final_loss(r) for r in select(runs, model__placement=p, model__warmup_steps=w, model__lr=lr)]
            for p in ("post", "pre")
            for w in (0, warm)
        }
        missing = [f"no run of {p} warm-up={w} lr={lr}" for (p, w), v in cell.items() if not v]
        verdict = decide(cell[("post", warm)], cell[("post", 0)], cell[("pre", warm)], cell[("pre", 0)], lr, self.rule)
        plots = [Plot("loss_vs_lr.png", "Final val loss vs learning rate", lambda ax: _draw(ax, runs, lrs, warm))]
        notes = [
            f"Tiny models ({s['depth']} layers, dim 64, {s['steps']} steps) with gradient clipping at 1.0 (normlight's default): the "
            "paper's gradient-scale argument grows with depth and training length, so a small or absent effect at "
            "this scale does not refute it."
        ]
        if missing:
            verdict = Verdict("inconclusive", self.rule, verdict.numbers, "missing runs: " + "; ".join(missing))
        return Analysis(verdict, [table], plots, notes, missing)


def decide(post_warm, post_cold, pre_warm, pre_cold, lr: float, rule: str) -> Verdict:
    """Apply the rule to the final losses (+inf = diverged) of the four cells at learning rate ``lr``."""
    fin = lambda xs: [x for x in xs if math.isfinite(x)]  # noqa: E731
    big = 1e6  # a diverged run's loss in the test: worse than any finished one, still a number for Welch
    a = lower_is_better([min(x, big) for x in post_warm], [min(x, big) for x in post_cold])
    mpw, _ = mean_std(fin(post_warm))
    mpc, _ = mean_std(fin(post_cold))
    mrw, _ = mean_std(fin(pre_warm))
    mrc, _ = mean_std(fin(pre_cold))
    pre_cold_bad = sum(map(math.isinf, pre_cold))
    b = bool(pre_cold) and bool(pre_warm) and pre_cold_bad == 0 and mrc - mrw <= PRE_TOLERANCE
    post_cost = (mpc if not any(map(math.isinf, post_cold)) else math.inf) - mpw
    numbers = {
        "lr": lr,
        "post_warmup_loss": mpw,
        "post_no_warmup_loss": mpc,
        "post_no_warmup_diverged": float(sum(map(math.isinf, post_cold))),
        "pre_warmup_loss": mrw,
        "pre_no_warmup_loss": mrc,
        "Post-LN loss cost of no warm-up (nats)": post_cost,
        "Pre-LN loss cost of no warm-up (nats)": mrc - mrw,
    }
    if min(len(post_warm), len(post_cold), len(pre_warm), len(pre_cold)) < MIN_SEEDS:
        return Verdict("inconclusive", rule, numbers, f"fewer than {MIN_SEEDS} seeds in some (placement, warm-up) cell")
    text = (
        f"at lr {lr:g}: Post-LN {mpw:.3f} with vs {mpc:.3f} without warm-up ({a} that warm-up helps); "
        f"Pre-LN {mrw:.3f} with vs {mrc:.3f} without (cost {mrc - mrw:+.3f} nats, tolerance {PRE_TOLERANCE})"
    )
    if a == "not reproduced" or not b:
        return Verdict("not reproduced", rule, numbers, text)
    return Verdict("reproduced" if a == "reproduced" else "inconclusive", rule, numbers, text)


def _draw(ax, runs, lrs, warm) -> None:
    for p, style in (("post", "-"), ("pre", "--")):
        for w in (0, warm):
            ys, lo, hi = [], [], []
            for lr in lrs:
                v = [final_loss(r) for r in select(runs, model__placement=p, model__warmup_steps=w, model__lr=lr)]
                v = [x for x in v if math.isfinite(x)] or [math.nan]
                ys.append(sum(v) / len(v))
                lo.append(min(v))
                hi.append(max(v))
            (line,) = ax.plot(lrs, ys, style, marker="o", label=f"{p}-LN, warm-up {w}")
            ax.fill_between(lrs, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (AdamW)")
    ax.set_ylabel("final val loss (nats/byte)")
    ax.legend(fontsize=7)


STUDY = WarmupStudy()
