"""E17: deep Post-LN fails while DeepNorm (Wang et al. 2022) and Sub-LN (Magneto, Wang et al. 2022) train,
without warm-up, at depth >= 24.

Grid: placement {post, pre, deepnorm, subln} x seed, a 24-layer byte-level GPT, no warm-up. A run *trains* when
it finished, did not diverge, and its final val loss is below the byte-unigram entropy of the corpus.
"""

from __future__ import annotations

import math

from normlight.studies.base import Analysis, RunRecord, Scale, Study, Table, Verdict
from normlight.studies.common import GPT_BASE, gpt_fixed, grid_for, pydoc_unigram_nats, seeds_axis
from normlight.studies.records import pm, select, stable
from normlight.studies.verdict import lower_is_better, mean_std

MIN_SEEDS = 2
PLACEMENTS = ("post", "pre", "deepnorm", "subln")
SCALES = {
    "smoke": dict(depth=2, steps=2),
    "cpu": dict(depth=24, steps=200),
    "gpu": dict(depth=100, steps=5000, dim=512, heads=8),
}


def loss_or_inf(r: RunRecord) -> float:
    """Final val loss; +inf when the run diverged or failed."""
    v = r.final.get("val/loss")
    return math.inf if r.diverged or r.status != "FINISHED" or v is None or not math.isfinite(v) else v


class DeepNormStudy(Study):
    """Deep Post-LN vs DeepNorm vs Sub-LN (and Pre-LN) without warm-up."""

    name = "e17_deepnorm"
    title = "Deep Post-LN fails; DeepNorm and Sub-LN train without warm-up"
    claim = (
        "[DeepNorm lets us] scale Transformers up to 1,000 layers (DeepNet); [Sub-LN gives] better stability (Magneto)"
    )
    paper = (
        "Wang et al. 2022, DeepNet: Scaling Transformers to 1,000 Layers (arXiv:2203.00555); Wang et al. 2022, "
        "Foundation Transformers (Magneto, arXiv:2210.06423)"
    )
    rule = (
        "A run trains if it finished, did not diverge and its final val loss is below the corpus's byte-unigram "
        "entropy. Reproduced if DeepNorm and Sub-LN train in every seed and Post-LN is worse than DeepNorm "
        "(it fails in every seed, or lower_is_better(DeepNorm, Post-LN) on final val loss with +inf for failed "
        "runs). Not reproduced if DeepNorm or Sub-LN fails in some seed, or Post-LN beats DeepNorm "
        f"(lower_is_better points the other way). Otherwise inconclusive (also with fewer than {MIN_SEEDS} seeds)."
    )
    key_metric = "val loss Post-LN minus DeepNorm (nats)"
    default_seeds = {"smoke": 1, "cpu": 2, "gpu": 3}

    def sweeps(self, scale: Scale, seeds: int) -> list[dict]:
        """One sweep: placement x seed, no warm-up."""
        s = SCALES[scale]
        fixed = gpt_fixed(scale, s, warmup_steps=0)
        return [
            {
                "name": "deep",
                "description": f"{s['depth']}-layer GPT, four placements, no warm-up, {s['steps']} steps",
                "base": GPT_BASE,
                "grid": grid_for(
                    scale,
                    {"model.placement": list(PLACEMENTS), "seed_everything": seeds_axis(seeds)},
                ),
                "fixed": fixed,
            }
        ]

    def estimated_cpu_minutes(self, scale: Scale) -> float:
        """8 runs of a 24-layer GPT at cpu scale."""
        return {"smoke": 1, "cpu": 8, "gpu": 5000}[scale]

    def measure(self, scale: Scale, seeds: int, runs: list[RunRecord]) -> dict:
        """The training threshold: the byte-unigram entropy of the training text (nats per byte)."""
        return {"unigram_nats": pydoc_unigram_nats()}

    def analyze(self, runs: list[RunRecord], extra: dict, scale: Scale) -> Analysis:
        """Trains/fails and loss per placement; the verdict."""
        floor = float(extra.get("unigram_nats", pydoc_unigram_nats()))
        by = {p: select(runs, model__placement=p) for p in PLACEMENTS}
        rows = [
            [
                p,
                f"{sum(stable(r, limit=floor) for r in sel)}/{len(sel)}",
                sum(r.diverged for r in sel),
                pm([x for x in map(loss_or_inf, sel) if math.isfinite(x)]),
                pm([r.final["diag/grad_norm"] for r in sel if "diag/grad_norm" in r.final]),
            ]
            for p, sel in by.items()
        ]
        table = Table(
            f"Per placement (trains = finished, not diverged, val loss < unigram entropy {floor:.3f})",
            ["placement", "trains", "diverged", "final val loss", "final grad norm"],
            rows,
        )
        verdict = decide(
            {p: [loss_or_inf(r) for r in sel] for p, sel in by.items()},
            {p: [stable(r, limit=floor) for r in sel] for p, sel in by.items()},
            self.rule,
        )
        notes = [
            f"{SCALES[scale]['depth']} layers of width 64, {SCALES[scale]['steps']} steps, Adam lr 3e-3, gradient "
            "clipping 1.0 (normlight's default): DeepNet's failures of Post-LN appear at 100s of layers and long "
            "schedules; at this depth and length Post-LN may still train, which would not refute the paper."
        ]
        missing = [f"no {p} run" for p, sel in by.items() if not sel]
        return Analysis(verdict, [table], [], notes, missing)


def decide(loss: dict[str, list[float]], trains: dict[str, list[bool]], rule: str) -> Verdict:
    """Apply the rule to per-placement final losses (+inf = failed) and train flags."""
    fin = lambda xs: [x for x in xs if math.isfinite(x)]  # noqa: E731
    m = {p: mean_std(fin(loss.get(p, [])))[0] for p in PLACEMENTS}
    numbers = {f"{p}_val_loss": m[p] for p in PLACEMENTS}
    numbers |= {f"{p}_trains": float(sum(trains.get(p, []))) for p in PLACEMENTS}
    post_all_fail = bool(trains.get("post")) and not any(trains["post"])
    numbers["val loss Post-LN minus DeepNorm (nats)"] = m["post"] - m["deepnorm"]  # over runs with a finite loss
    if min(len(trains.get(p, [])) for p in ("post", "deepnorm", "subln")) < MIN_SEEDS:
        return Verdict("inconclusive", rule, numbers, f"fewer than {MIN_SEEDS} seeds for some placement")
    big = 1e6
    cmp = lower_is_better([min(x, big) for x in loss["deepnorm"]], [min(x, big) for x in loss["post"]])
    text = (
        f"trains: Post-LN {sum(trains['post'])}/{len(trains['post'])}, DeepNorm {sum(trains['deepnorm'])}/"
        f"{len(trains['deepnorm'])}, Sub-LN {sum(trains['subln'])}/{len(trains['subln'])}; val loss Post-LN "
        f"{m['post']:.3f} vs DeepNorm {m['deepnorm']:.3f} ({cmp} that DeepNorm is lower)"
    )
    if not all(trains["deepnorm"]) or not all(trains["subln"]) or cmp == "not reproduced":
        return Verdict("not reproduced", rule, numbers, text)
    if post_all_fail or cmp == "reproduced":
        return Verdict("reproduced", rule, numbers, text)
    return Verdict("inconclusive", rule, numbers, text)


STUDY = DeepNormStudy()
