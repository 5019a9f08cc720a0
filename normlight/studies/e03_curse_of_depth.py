"""E3: the curse of depth (Sun et al. 2025): in Pre-LN the residual-stream variance grows with depth and deep
blocks become near-identity; LayerNorm Scaling (placement ``lns``: pre-norm outputs scaled by 1/sqrt(l)) tames it.

Grid: placement {pre, lns} x seed, one deep byte-level GPT. Measured by the training diagnostics: the residual
RMS per layer and its log-variance growth slope over depth (``diag/resid_growth_slope``), and block influence
1 - cos(h_in, h_out) per block on a fixed probe batch (``diag/block_influence/lNN``) at the last validation.
"""

from __future__ import annotations

import math

from normlight.studies.base import Analysis, Plot, RunRecord, Scale, Study, Table, Verdict
from normlight.studies.common import GPT_BASE, gpt_fixed, grid_for, seeds_axis
from normlight.studies.plots import profiles
from normlight.studies.records import per_layer, pm, select
from normlight.studies.verdict import lower_is_better, mean_std

MIN_SEEDS = 2
SCALES = {
    "smoke": dict(depth=2, steps=2),
    "cpu": dict(depth=12, steps=400),
    "gpu": dict(depth=24, steps=5000, dim=512, heads=8),
}


def slope(r: RunRecord) -> float | None:
    """The final log-variance growth slope over depth of one run (None if not logged)."""
    v = r.final.get("diag/resid_growth_slope")
    return v if v is not None and math.isfinite(v) else None


def deep_influence(r: RunRecord) -> float | None:
    """Mean block influence of the deeper half of the blocks at the last validation (None if not logged)."""
    bi = per_layer(r, "diag/block_influence")
    deep = [x for x in bi[len(bi) // 2 :] if math.isfinite(x)]
    return sum(deep) / len(deep) if deep else None


class CurseOfDepthStudy(Study):
    """Pre-LN vs LayerNorm Scaling: variance growth over depth and deep-block influence."""

    name = "e3_curse_of_depth"
    title = "Curse of depth: Pre-LN variance grows with depth; LayerNorm Scaling tames it"
    claim = (
        "output variance exponentially grows with the model depth ... [LayerNorm Scaling] scales the variance of "
        "output of the layer normalization inversely by the square root of its depth"
    )
    paper = "Sun et al. 2025, The Curse of Depth in Large Language Models (arXiv:2502.05795)"
    rule = (
        "(a) Pre-LN's residual log-variance grows with depth (final growth slope > 0) in every seed; (b) LNS's slope "
        "is lower than Pre-LN's (lower_is_better: seed ranges separate or Welch p < 0.05); (c) the deeper half of "
        "Pre-LN's blocks has lower mean block influence than LNS's (same test). Reproduced if (a), (b) and (c); not "
        f"reproduced if Pre-LN's mean slope is <= 0 or (b) or (c) points the other way; else inconclusive (also with "
        f"fewer than {MIN_SEEDS} seeds)."
    )
    key_metric = "log-variance slope per layer, Pre-LN minus LNS"

    def sweeps(self, scale: Scale, seeds: int) -> list[dict]:
        """One sweep: placement {pre, lns} x seed."""
        s = SCALES[scale]
        fixed = gpt_fixed(scale, s, warmup_steps=s["steps"] // 10)
        return [
            {
                "name": "depth",
                "description": f"{s['depth']}-layer GPT, Pre-LN vs LayerNorm Scaling, {s['steps']} steps",
                "base": GPT_BASE,
                "grid": grid_for(
                    scale,
                    {"model.placement": ["pre", "lns"], "seed_everything": seeds_axis(seeds)},
                ),
                "fixed": fixed,
            }
        ]

    def estimated_cpu_minutes(self, scale: Scale) -> float:
        """6 runs of a 12-layer GPT at cpu scale."""
        return {"smoke": 1, "cpu": 6, "gpu": 900}[scale]

    def analyze(self, runs: list[RunRecord], extra: dict, scale: Scale) -> Analysis:
        """Slope and deep-half influence per placement; residual RMS and block influence profiles."""
        pre, lns = select(runs, model__placement="pre"), select(runs, model__placement="lns")
        rows = []
        for label, sel in (("pre", pre), ("lns", lns)):
            rows.append(
                [
                    label,
                    pm([x for x in map(slope, sel) if x is not None]),
                    pm([x for x in map(deep_influence, sel) if x is not None]),
                    pm([r.final["val/loss"] for r in sel if "val/loss" in r.final]),
                ]
            )
        table = Table(
            "Per placement, mean ± std over seeds",
            ["placement", "log-variance slope per layer", "deep-half block influence", "final val loss"],
            rows,
        )
        verdict = decide(
            [x for x in map(slope, pre) if x is not None],
            [x for x in map(slope, lns) if x is not None],
            [x for x in map(deep_influence, pre) if x is not None],
            [x for x in map(deep_influence, lns) if x is not None],
            self.rule,
        )
        groups = lambda prefix: {p: [per_layer(r, prefix) for r in sel] for p, sel in (("pre", pre), ("lns", lns))}  # noqa: E731
        plots = [
            Plot(
                "resid_rms.png",
                "Residual-stream RMS per layer (end of training)",
                lambda ax: profiles(ax, groups("diag/resid_rms"), "RMS", log=True),
            ),
            Plot(
                "block_influence.png",
                "Block influence 1 - cos(h_in, h_out) per block",
                lambda ax: profiles(ax, groups("diag/block_influence"), "block influence"),
            ),
        ]
        notes = [
            f"{SCALES[scale]['depth']} layers of width 64 for {SCALES[scale]['steps']} steps: the paper measures 1B-7B "
            "models after long training, where the variance growth compounds; a short run shows the trend, not its size."
        ]
        missing = [f"no {p} run" for p, sel in (("pre", pre), ("lns", lns)) if not sel]
        return Analysis(verdict, [table], plots, notes, missing)


def decide(slope_pre, slope_lns, bi_pre, bi_lns, rule: str) -> Verdict:
    """Apply the rule to per-seed slopes and deep-half influences of the two placements."""
    b = lower_is_better(slope_lns, slope_pre)
    c = lower_is_better(bi_pre, bi_lns)
    msp, _ = mean_std(slope_pre)
    msl, _ = mean_std(slope_lns)
    mbp, _ = mean_std(bi_pre)
    mbl, _ = mean_std(bi_lns)
    numbers = {
        "pre_slope": msp,
        "lns_slope": msl,
        "pre_deep_influence": mbp,
        "lns_deep_influence": mbl,
        "log-variance slope per layer, Pre-LN minus LNS": msp - msl,
    }
    if min(len(slope_pre), len(slope_lns), len(bi_pre), len(bi_lns)) < MIN_SEEDS:
        return Verdict("inconclusive", rule, numbers, f"fewer than {MIN_SEEDS} seeds with diagnostics per placement")
    a = all(x > 0 for x in slope_pre)
    text = (
        f"Pre-LN log-variance slope {msp:.3f}/layer ({sum(x > 0 for x in slope_pre)}/{len(slope_pre)} seeds > 0) vs "
        f"LNS {msl:.3f} ({b}); deep-half block influence Pre-LN {mbp:.4f} vs LNS {mbl:.4f} ({c})"
    )
    if msp <= 0 or b == "not reproduced" or c == "not reproduced":
        return Verdict("not reproduced", rule, numbers, text)
    return Verdict("reproduced" if a and b == c == "reproduced" else "inconclusive", rule, numbers, text)


STUDY = CurseOfDepthStudy()
