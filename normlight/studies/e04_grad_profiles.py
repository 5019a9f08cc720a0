"""E4: gradient-norm profiles over depth for Post-LN, Pre-LN, Mix-LN, Peri-LN and NormFormer.

Claims (Xiong et al. 2020; NormFormer, Shleifer et al. 2021; Mix-LN, Li et al. 2024; Peri-LN, Kim et al. 2025):
Pre-LN's per-block gradient norms are larger in early blocks than in deep ones, Post-LN's are smaller early
(vanishing towards the input), and Mix-LN, NormFormer and Peri-LN are more uniform over depth. Measured by the
training diagnostics every 10 steps: the per-block gradient norm, its first/last ratio
(``diag/grad_norm_first_last``) and its coefficient of variation over depth (``diag/grad_norm_cv``), each
averaged over the logged steps of a run.
"""

from __future__ import annotations

import math

from normlight.studies.base import Analysis, Plot, RunRecord, Scale, Study, Table, Verdict
from normlight.studies.common import GPT_BASE, gpt_fixed, grid_for, seeds_axis
from normlight.studies.plots import profiles
from normlight.studies.records import at_step, pm, select
from normlight.studies.verdict import lower_is_better, mean_std

MIN_SEEDS = 2
UNIFORM = ("mix", "peri", "normformer")
PLACEMENTS = ("post", "pre", *UNIFORM)
SCALES = {
    "smoke": dict(depth=2, steps=2),
    "cpu": dict(depth=12, steps=200),
    "gpu": dict(depth=24, steps=5000, dim=512, heads=8),
}


def run_mean(r: RunRecord, key: str) -> float | None:
    """Mean over the logged steps of a run's metric ``key`` (finite values only; None if none)."""
    xs = [v for _, v in r.history.get(key, []) if math.isfinite(v)]
    return sum(xs) / len(xs) if xs else None


def mean_profile(r: RunRecord) -> list[float]:
    """Per-block gradient norm averaged over the logged steps of one run."""
    keys = sorted(k for k in r.history if k.startswith("diag/grad_norm/l"))
    out = []
    for k in keys:
        xs = [v for _, v in r.history[k] if math.isfinite(v)]
        out.append(sum(xs) / len(xs) if xs else math.nan)
    return out


class GradProfileStudy(Study):
    """Per-block gradient norms over depth for five placements."""

    name = "e4_grad_profiles"
    title = "Gradient-norm profiles over depth: Post vs Pre vs Mix vs Peri vs NormFormer"
    claim = (
        "[Pre-LN:] gradients at early layers are much larger than at later layers (NormFormer); "
        "[Mix-LN:] more uniform gradients across layers; [Peri-LN:] steadier gradient flow"
    )
    paper = (
        "Shleifer et al. 2021, NormFormer (arXiv:2110.09456); Li et al. 2024, Mix-LN (arXiv:2412.13795); "
        "Kim et al. 2025, Peri-LN (arXiv:2502.02732); Xiong et al. 2020 (arXiv:2002.04745)"
    )
    rule = (
        "Per run, average over the logged steps the first/last block gradient-norm ratio and the coefficient of "
        "variation (CV) over depth. (a) Pre-LN's ratio > 1 in every seed; (b) Post-LN's ratio < 1 in every seed; "
        "(c) each of Mix-LN, Peri-LN and NormFormer has a lower CV than Pre-LN (lower_is_better: seed ranges "
        "separate or Welch p < 0.05). Reproduced if (a), (b) and (c) for all three; not reproduced if Pre-LN's mean "
        "ratio <= 1, Post-LN's mean ratio >= 1, or any (c) points the other way; else inconclusive (also with fewer "
        f"than {MIN_SEEDS} seeds)."
    )
    key_metric = "first/last grad-norm ratio, Pre-LN"

    def sweeps(self, scale: Scale, seeds: int) -> list[dict]:
        """One sweep: placement x seed."""
        s = SCALES[scale]
        fixed = gpt_fixed(scale, s, warmup_steps=s["steps"] // 10, **{"model.lr": 1e-3})
        return [
            {
                "name": "profiles",
                "description": f"{s['depth']}-layer GPT, five placements, {s['steps']} steps",
                "base": GPT_BASE,
                "grid": grid_for(
                    scale,
                    {"model.placement": list(PLACEMENTS), "seed_everything": seeds_axis(seeds)},
                ),
                "fixed": fixed,
            }
        ]

    def estimated_cpu_minutes(self, scale: Scale) -> float:
        """15 runs of a 12-layer GPT at cpu scale."""
        return {"smoke": 1, "cpu": 9, "gpu": 2000}[scale]

    def analyze(self, runs: list[RunRecord], extra: dict, scale: Scale) -> Analysis:
        """Ratio and CV per placement; the mean gradient-norm profile plot."""
        by = {p: select(runs, model__placement=p) for p in PLACEMENTS}
        ratio = {
            p: [x for r in sel if (x := run_mean(r, "diag/grad_norm_first_last")) is not None] for p, sel in by.items()
        }
        cv = {p: [x for r in sel if (x := run_mean(r, "diag/grad_norm_cv")) is not None] for p, sel in by.items()}
        rows = [
            [p, pm(ratio[p]), pm(cv[p]), pm([r.final["val/loss"] for r in by[p] if "val/loss" in r.final])]
            for p in PLACEMENTS
        ]
        table = Table(
            "Per placement (averaged over logged steps), mean ± std over seeds",
            ["placement", "first/last grad-norm ratio", "CV over depth", "final val loss"],
            rows,
        )
        verdict = decide(ratio, cv, self.rule)
        plots = [
            Plot(
                "grad_profile.png",
                "Per-block gradient norm (mean over logged steps)",
                lambda ax: profiles(
                    ax, {p: [mean_profile(r) for r in by[p]] for p in PLACEMENTS}, "grad norm", log=True
                ),
            ),
            Plot(
                "grad_profile_early.png",
                "Per-block gradient norm at the first logged step (near init)",
                lambda ax: profiles(
                    ax,
                    {
                        p: [
                            [at_step(r.history[k], 0) for k in sorted(r.history) if k.startswith("diag/grad_norm/l")]
                            for r in by[p]
                        ]
                        for p in PLACEMENTS
                    },
                    "grad norm",
                    log=True,
                ),
            ),
        ]
        notes = [
            f"{SCALES[scale]['depth']} layers of width 64, {SCALES[scale]['steps']} steps at lr 1e-3 with 10% warm-up: "
            "the profiles are measured over the whole (short) run; at paper scale they are reported at init or early "
            "in training of far wider models."
        ]
        missing = [f"no {p} run" for p, sel in by.items() if not sel]
        return Analysis(verdict, [table], plots, notes, missing)


def decide(ratio: dict[str, list[float]], cv: dict[str, list[float]], rule: str) -> Verdict:
    """Apply the rule to per-seed first/last ratios and CVs keyed by placement."""
    m = {p: mean_std(ratio.get(p, []))[0] for p in PLACEMENTS}
    mcv = {p: mean_std(cv.get(p, []))[0] for p in PLACEMENTS}
    numbers = {f"{p}_ratio": m[p] for p in PLACEMENTS} | {f"{p}_cv": mcv[p] for p in PLACEMENTS}
    numbers["first/last grad-norm ratio, Pre-LN"] = m["pre"]
    if min(min(len(ratio.get(p, [])), len(cv.get(p, []))) for p in PLACEMENTS) < MIN_SEEDS:
        return Verdict(
            "inconclusive", rule, numbers, f"fewer than {MIN_SEEDS} seeds with gradient profiles for some placement"
        )
    a = all(x > 1 for x in ratio["pre"])
    b = all(x < 1 for x in ratio["post"])
    c = {p: lower_is_better(cv[p], cv["pre"]) for p in UNIFORM}
    text = (
        f"first/last ratio Pre-LN {m['pre']:.2f}, Post-LN {m['post']:.2f}; CV Pre-LN {mcv['pre']:.2f} vs "
        + ", ".join(f"{p} {mcv[p]:.2f} ({c[p]})" for p in UNIFORM)
    )
    if m["pre"] <= 1 or m["post"] >= 1 or "not reproduced" in c.values():
        return Verdict("not reproduced", rule, numbers, text)
    ok = a and b and all(v == "reproduced" for v in c.values())
    return Verdict("reproduced" if ok else "inconclusive", rule, numbers, text)


STUDY = GradProfileStudy()
