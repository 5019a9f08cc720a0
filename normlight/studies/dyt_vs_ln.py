"""DyT matches LayerNorm in ViT and GPT (Zhu et al. 2025), with the paper's alpha0 rules and with normlight's
default ``alpha_init="auto"``, across widths.

Sweeps ``gpt`` (WordNet glosses, byte-level) and ``vit`` (28 px Fashion-MNIST, patch 7; digits when absent),
each x setup (norm arm x width) x seeds. Arms:

- ``ln``: LayerNorm (Pre-LN, the baseline);
- ``dyt_paper``: the paper's alpha0 rules. ViT (non-LLM): one alpha0 = 0.5 everywhere, with bias. GPT (LLM): the
  LLaMA recipe: no bias, alpha0 per site, attention-input 0.8 / FFN-input 0.2 / final 0.2 (the values the paper
  gives for its narrowest LLM, LLaMA2-7B, width 4096; it lowers them as width grows and gives none below
  4096), plus the learnable sqrt(d) embedding scale of that recipe (``emb_scale``);
- ``dyt_auto``: normlight's default, alpha0 = 1/std of each DyT's input on the first training batch, with bias.

Every arm of a family and width uses the same learning rate and steps.
"""

from __future__ import annotations

import math

from normlight.studies import data
from normlight.studies.base import Analysis, Plot, RunRecord, Study, Table, Verdict
from normlight.studies.groups import band_plot, metric_values, pick
from normlight.studies.verdict import mean_std

ARMS = ("ln", "dyt_paper", "dyt_auto")
PAPER_GPT = {"alpha_init": 0.2, "bias": False, "sites": {"attn_in": {"alpha_init": 0.8}}}
PAPER_VIT = {"alpha_init": 0.5}
TOL = 0.02  # DyT "matches" LN: GPT val loss within 2% (relative), ViT val accuracy within 0.02 (absolute)
UNIFORM_LOSS = math.log(256)
SCALES = {
    "smoke": dict(widths=(32,), depth=1, heads=2, ctx=32, steps=6, vit_steps=0, arms=("dyt_auto",)),
    "cpu": dict(widths=(32, 96), depth=4, heads=4, ctx=64, steps=400, vit_steps=300, arms=ARMS),
    "gpu": dict(widths=(256, 512, 1024), depth=12, heads=8, ctx=256, steps=20000, vit_steps=20000, arms=ARMS),
}


def _setup(family: str, arm: str, width: int, s: dict) -> dict:
    """One grid value: norm, norm options and model shape of ``arm`` at ``width``."""
    if family == "gpt":
        kw = dict(depth=s["depth"], dim=width, num_heads=s["heads"], max_seq_len=s["ctx"])
        paper = PAPER_GPT
    else:
        kw = dict(img_size=28, in_chans=1, patch_size=7, depth=s["depth"], dim=width, num_heads=s["heads"])
        paper = PAPER_VIT
    if arm == "ln":
        norm, nkw = "layernorm", None
    elif arm == "dyt_paper":
        norm, nkw = "dyt", paper
        if family == "gpt":
            kw["emb_scale"] = True
    else:
        norm, nkw = "dyt", {"alpha_init": "auto"}
    return {"label": f"{arm}@{width}", "model.norm": norm, "model.norm_kwargs": nkw, "model.model_kwargs": kw}


class DyTvsLN(Study):
    """DyT study (see module docstring)."""

    name = "dyt_vs_ln"
    title = "DyT matches LayerNorm in ViT and GPT: the paper's alpha0 rules vs alpha_init='auto', across widths"
    claim = (
        '"Transformers with DyT can match or exceed the performance of their normalized counterparts, mostly '
        'without hyperparameter tuning"'
    )
    paper = "Zhu, Chen, He, LeCun & Liu 2025, Transformers without Normalization (arXiv:2503.10622)"
    rule = (
        "Per family (GPT, ViT) and width, DyT matches LayerNorm if its mean gap is <= 0.02 (GPT: (loss_DyT - "
        "loss_LN) / loss_LN on final val loss; ViT: acc_LN - acc_DyT on final val accuracy; failed/diverged runs "
        "score ln 256 / 0.1), and fails to match if the gap exceeds 0.02 in every pair of seeds (every DyT seed "
        "worse than every LN seed by more than the tolerance). The verdict is on the paper's alpha0 rules: "
        "reproduced if dyt_paper matches in every cell; not reproduced if it fails in any cell; inconclusive "
        "otherwise. dyt_auto gets the same cell-by-cell classification, reported beside it."
    )
    key_metric = "dyt_paper_cells_matching"  # of the family x width cells
    default_seeds = {"smoke": 1, "cpu": 2, "gpu": 3}

    def sweeps(self, scale, seeds):
        """``gpt`` and ``vit``: setup (arm x width) x seed."""
        s = SCALES[scale]
        seed_axis = list(range(seeds))
        out = [
            {
                "name": "gpt",
                "base": "configs/gpt_glosses.yaml",
                "description": "GPT: LayerNorm vs DyT (paper alpha0) vs DyT (auto) across widths",
                "grid": {
                    "setup": [_setup("gpt", a, w, s) for w in s["widths"] for a in s["arms"]],
                    "seed_everything": seed_axis,
                },
                "fixed": {
                    "data": data.text(s["ctx"], 16),
                    "model.lr": 2.0e-3,
                    "trainer.max_steps": s["steps"],
                    "trainer.val_check_interval": max(1, s["steps"] // 2),
                },
            }
        ]
        if s["vit_steps"]:
            out.append(
                {
                    "name": "vit",
                    "base": "configs/vit_fashion.yaml",
                    "description": "ViT: LayerNorm vs DyT (paper alpha0) vs DyT (auto) across widths",
                    "grid": {
                        "setup": [_setup("vit", a, w, s) for w in s["widths"] for a in s["arms"]],
                        "seed_everything": seed_axis,
                    },
                    "fixed": {
                        "data": data.vision(scale, 28, 64),
                        "trainer.max_steps": s["vit_steps"],
                        "trainer.val_check_interval": max(1, s["vit_steps"] // 2),
                    },
                }
            )
        return out

    def analyze(self, runs: list[RunRecord], extra: dict, scale) -> Analysis:
        """Per-cell gaps and classification; verdict on the paper arm."""
        s = SCALES[scale]
        planned = [(f, w) for f in (("gpt", "vit") if s["vit_steps"] else ("gpt",)) for w in s["widths"]]
        cells = set(planned)  # (family, width): the planned ones and any other the store holds
        for r in runs:
            arm, _, width = str(r.labels.get("setup", "")).partition("@")
            if width.isdigit():
                cells.add((r.sweep, int(width)))
        cells = sorted(cells)
        rows, status, numbers, missing = [], {"dyt_paper": [], "dyt_auto": []}, {}, []
        for fam, w in cells:
            metric, failed = ("val/loss", UNIFORM_LOSS) if fam == "gpt" else ("val/acc1", 0.1)
            fam_runs = [r for r in runs if r.sweep == fam]
            vals = {a: metric_values(pick(fam_runs, setup=f"{a}@{w}"), metric, failed) for a in ARMS}
            if not vals["ln"] and "ln" in s["arms"]:
                missing.append(f"{fam} LayerNorm runs at width {w}")
            row = [fam, w]
            for a in ARMS:
                m, sd = mean_std(vals[a]) if vals[a] else (math.nan, math.nan)
                row += [m, sd]
                numbers[f"{fam}_w{w}_{a}"] = m
            for a in ("dyt_paper", "dyt_auto"):
                gaps = [_gap(fam, d, ln) for d in vals[a] for ln in vals["ln"]]
                if not vals[a] and a in s["arms"]:
                    missing.append(f"{fam} {a} runs at width {w}")
                mean_gap = (
                    _gap(fam, mean_std(vals[a])[0], mean_std(vals["ln"])[0]) if vals[a] and vals["ln"] else math.nan
                )
                if math.isnan(mean_gap):
                    cls = "inconclusive"
                elif mean_gap <= TOL:
                    cls = "matches"
                elif gaps and min(gaps) > TOL:
                    cls = "fails"
                else:
                    cls = "inconclusive"
                status[a].append(cls)
                numbers[f"{fam}_w{w}_{a}_gap"] = mean_gap
                row += [mean_gap, cls]
            rows.append(row)
        paper = status["dyt_paper"]
        if not paper or missing:
            outcome = "inconclusive"
        elif all(c == "matches" for c in paper):
            outcome = "reproduced"
        elif any(c == "fails" for c in paper):
            outcome = "not reproduced"
        else:
            outcome = "inconclusive"
        for a in ("dyt_paper", "dyt_auto"):
            numbers[f"{a}_cells_matching"] = float(sum(c == "matches" for c in status[a]))
        numbers["cells"] = float(len(cells))
        reason = (
            f"paper alpha0 matches LN in {numbers['dyt_paper_cells_matching']:.0f}/{len(cells)} cells, auto in "
            f"{numbers['dyt_auto_cells_matching']:.0f}/{len(cells)}: "
            + "; ".join(f"{f} w{w} paper {p}, auto {a}" for (f, w), p, a in zip(cells, paper, status["dyt_auto"]))
        )
        cols = ["family", "width"] + [c for a in ARMS for c in (a, "± std")]
        cols += ["gap paper", "paper", "gap auto", "auto"]
        tables = [Table("Final val loss (gpt) / val accuracy (vit) by arm and width; gap > 0 = DyT worse", cols, rows)]
        plots = [
            Plot(
                f"{fam}_vs_width.png",
                f"{fam}: final {'val loss' if fam == 'gpt' else 'val accuracy'} vs width",
                _draw_width(runs, fam),
            )
            for fam in sorted({f for f, _ in cells})
        ]
        notes = data.describe(runs, scale) + [
            "The paper's alpha0 guidance was tuned on ViT-B/L and LLaMA 7B-70B (widths 768-8192), where the norms' "
            "inputs are of order 1; in these small models the inputs start with std ~0.02-0.1 (N(0, 0.02) "
            "embeddings), so a fixed alpha0 of 0.2-0.8 makes tanh nearly linear with a tiny output, unlike "
            "LayerNorm's unit output. alpha_init='auto' rescales to the input, the paper's own observation that "
            "the learned alpha tracks 1/std of the activations.",
            "For the GPT the paper gives alpha0 only for widths >= 4096 (LLaMA2-7B: 0.8/0.2/0.2); the study uses "
            "those values at every width, so 'the paper's rule' below 4096 is an extrapolation it does not make.",
        ]
        return Analysis(Verdict(outcome, self.rule, numbers, reason), tables, plots, notes, missing)

    def estimated_cpu_minutes(self, scale) -> float:
        """24 runs at cpu scale (2 seeds): 12 GPT of 400 steps, 12 ViT of 300 steps."""
        return {"smoke": 0.3, "cpu": 6.0, "gpu": 1200.0}[scale]


def _gap(family: str, dyt: float, ln: float) -> float:
    """How much worse DyT is (> 0 worse): relative loss gap for GPT, absolute accuracy gap for ViT."""
    return (dyt - ln) / ln if family == "gpt" else ln - dyt


def _draw_width(runs, fam):
    metric, failed = ("val/loss", UNIFORM_LOSS) if fam == "gpt" else ("val/acc1", 0.1)
    series: dict[str, dict[float, list[float]]] = {a: {} for a in ARMS}
    for r in runs:
        if r.sweep != fam:
            continue
        arm, _, width = str(r.labels.get("setup", "")).partition("@")
        if arm in series and width.isdigit():
            series[arm].setdefault(int(width), []).extend(metric_values([r], metric, failed))

    def draw(ax):
        band_plot(ax, series, "width (dim)", metric, logx=True)

    return draw


STUDY = DyTvsLN()
