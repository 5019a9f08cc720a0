"""E6: unnormalized deep ResNets train with Fixup (Zhang et al. 2019) or as NF-ResNets (Brock et al. 2021) like
BatchNorm ResNets, and their scale at init does not grow with depth; a no-norm ResNet with default init fails.

Two parts:

- ``measure()`` (no training): for CIFAR ResNets of depth 6n+2 up to ~1,000 layers, the std of the last feature
  map and the input-gradient scale ``||J^T r|| / sqrt(numel(x))`` (r ~ N(0, 1) the size of the features) on a
  fixed N(0, 1) batch at init, for BatchNorm (train-mode statistics), no norm with He init (``norm=identity``),
  Fixup and NF;
- sweep ``train``: ResNet-20 (half width, 16 px Fashion-MNIST; digits when absent) x {batchnorm, no norm, fixup,
  nf} x seeds, SGD + Nesterov at LR 0.1.
"""

from __future__ import annotations

import math

from normlight.studies import data
from normlight.studies.base import Analysis, Plot, RunRecord, Study, Table, Verdict
from normlight.studies.groups import band_plot, combine, metric_values, pick
from normlight.studies.verdict import mean_std

ARMS = {  # label -> (norm, variant)
    "bn": ("batchnorm", "standard"),
    "no_norm": ("identity", "standard"),
    "fixup": (None, "fixup"),
    "nf": (None, "nf"),
}
SCALES = {
    "smoke": dict(steps=4, arms=("fixup",), depths=(8, 14), width=0.25, img=8),
    "cpu": dict(steps=300, arms=tuple(ARMS), depths=(8, 20, 56, 110, 218, 506, 998), width=0.25, img=16),
    "gpu": dict(steps=20000, arms=tuple(ARMS), depths=(20, 56, 110, 218, 506, 998, 2006), width=1.0, img=32),
}
GROWTH_FAIL, GROWTH_OK = 100.0, 10.0  # init-scale ratio deepest / shallowest: no-norm >= 100x, fixup/nf within 10x
ACC_TOL, NO_NORM_GAP = 0.03, 0.10


class FixupAndNF(Study):
    """E6 (see module docstring)."""

    name = "e6_fixup_nf"
    title = "Fixup and NF-ResNets train like BatchNorm ResNets; their scale at init does not grow with depth"
    claim = (
        '"We find training residual networks with Fixup to be as stable as training with normalization -- even for '
        'networks with 10,000 layers" (Fixup); NF-ResNets: "per-channel activation means do not grow with depth"'
    )
    paper = (
        "Zhang, Dauphin & Ma 2019, Fixup Initialization: Residual Learning Without Normalization (arXiv:1901.09321); "
        "Brock, De & Smith 2021, Characterizing signal propagation to close the performance gap in unnormalized "
        "ResNets (arXiv:2101.08692)"
    )
    rule = (
        f"(a) at init, the last feature map's std grows >= {GROWTH_FAIL:g}x from the shallowest to the deepest "
        f"no-norm ResNet (or overflows), and changes by at most {GROWTH_OK:g}x either way for Fixup and for NF; (b) trained, Fixup and NF "
        f"each reach a mean val accuracy >= BatchNorm's mean - {ACC_TOL}; (c) the no-norm default-init ResNet ends "
        f"every seed diverged or >= {NO_NORM_GAP} below BatchNorm's mean accuracy. A part fails (not reproduced) "
        "when it is violated in every seed (for (a): by the measurement); reproduced if all parts hold; "
        "inconclusive otherwise (or when data are missing). Failed or diverged runs score chance (0.1)."
    )
    key_metric = "fixup_nf_minus_bn"  # min(val acc Fixup, NF) minus BatchNorm's
    default_seeds = {"smoke": 1, "cpu": 2, "gpu": 3}  # cpu: 2 seeds fit a shared 2-core machine

    def sweeps(self, scale, seeds):
        """``train``: ResNet-20 x arm x seed."""
        s = SCALES[scale]
        arms = []
        for label in s["arms"]:
            norm, variant = ARMS[label]
            kw = {"img_size": s["img"], "in_chans": 1, "width": 0.5, "variant": variant}
            arms.append({"label": label, "model.norm": norm, "model.model_kwargs": kw})
        return [
            {
                "name": "train",
                "base": "configs/resnet_fashion.yaml",
                "description": "ResNet-20: BatchNorm vs no norm vs Fixup vs NF",
                "grid": {"arm": arms, "seed_everything": list(range(seeds))},
                "fixed": {
                    "data": data.vision(scale, s["img"], 64),
                    "trainer.max_steps": s["steps"],
                    "trainer.val_check_interval": max(1, s["steps"] // 2),
                },
            }
        ]

    def measure(self, scale, seeds, runs) -> dict:
        """Init-time output and gradient scale vs depth for every arm (see module docstring)."""
        s = SCALES[scale]
        return {
            "depths": list(s["depths"]),
            "scale": {arm: [init_scale(arm, d, s["width"], s["img"]) for d in s["depths"]] for arm in ARMS},
        }

    def analyze(self, runs: list[RunRecord], extra: dict, scale) -> Analysis:
        """Depth curve at init, accuracies after training, the three-part verdict."""
        acc = {a: metric_values(pick(runs, arm=a), "val/acc1", 0.1) for a in ARMS}
        depths = extra.get("depths") or []
        scales = extra.get("scale") or {}
        growth = {a: _growth([p.get("out_std") for p in scales.get(a, [])]) for a in ARMS}
        missing = [f"training runs of {a}" for a in SCALES[scale]["arms"] if not acc[a]]
        missing += ["the init-scale measurement (measure())"] if not depths else []
        bn = mean_std(acc["bn"])[0] if acc["bn"] else math.nan
        parts = {"a": _part_a(growth), "b": _part_b(acc, bn), "c": _part_c(acc["no_norm"], runs, bn)}
        outcome = combine(parts) if not missing else "inconclusive"
        numbers = {f"acc_{a}": mean_std(v)[0] if v else math.nan for a, v in acc.items()}
        numbers.update({f"init_growth_{a}": g for a, g in growth.items()})
        numbers["fixup_nf_minus_bn"] = min(numbers["acc_fixup"], numbers["acc_nf"]) - numbers["acc_bn"]
        reason = (
            f"init growth over depths {depths[:1]}..{depths[-1:]} no-norm {_fmt(growth['no_norm'])}, "
            f"fixup {_fmt(growth['fixup'])}, nf {_fmt(growth['nf'])}, bn {_fmt(growth['bn'])}; val acc "
            + ", ".join(f"{a} {numbers['acc_' + a]:.3f}" for a in ARMS)
            + f"; parts (a) {parts['a']}, (b) {parts['b']}, (c) {parts['c']}"
        )
        tables = [
            Table(
                "ResNet-20 final val accuracy (failed/diverged runs score 0.1)",
                ["arm", "val acc1", "± std", "runs", "diverged"],
                [[a, *_ms(acc[a]), len(acc[a]), sum(r.diverged for r in pick(runs, arm=a))] for a in ARMS],
            ),
            Table(
                "Init: std of the last feature map vs depth (None = overflow)",
                ["depth", *ARMS],
                [[d, *[_at(scales, a, i, "out_std") for a in ARMS]] for i, d in enumerate(depths)],
            ),
            Table(
                "Init: input-gradient scale vs depth (None = overflow)",
                ["depth", *ARMS],
                [[d, *[_at(scales, a, i, "grad_scale") for a in ARMS]] for i, d in enumerate(depths)],
            ),
        ]
        plots = []
        if depths:
            plots.append(Plot("init_scale_vs_depth.png", "Output scale at init vs depth", _draw_depth(depths, scales)))
        notes = data.describe(runs, scale) + [
            f"The depth curve uses ResNets of width {SCALES[scale]['width']} (channels "
            f"{[round(c * SCALES[scale]['width']) for c in (16, 32, 64)]}) on {SCALES[scale]['img']} px N(0, 1) "
            "inputs: the scale argument does not depend on width, and ~1,000 layers stay cheap on a CPU.",
            "Fixup's and NF's claims are about deep networks trained for 100+ epochs; a few hundred SGD steps of "
            "ResNet-20 test only that they start and train at BatchNorm's pace.",
            "Fixup's reference CIFAR script (hongyi-zhang/Fixup, cifar/cifar_train.py) trains the scalar biases and "
            "multipliers at 1/10 of the base learning rate and uses mixup; normlight's task has one learning rate "
            "for all parameters, so the Fixup arm here trains its scalars 10x faster than that recipe.",
        ]
        notes += [
            f"{a} ended at chance level (mean val acc {mean_std(acc[a])[0]:.3f}) in every seed without diverging: "
            "its network went dead (constant logits), which the rule counts like a divergence."
            for a in ARMS
            if acc[a] and not any(r.diverged for r in pick(runs, arm=a)) and max(acc[a]) < 0.15
        ]
        bn_grad = [p.get("grad_scale") for p in scales.get("bn", [])]
        if len(bn_grad) >= 2 and bn_grad[0] and bn_grad[-1]:
            notes.append(
                f"BatchNorm keeps the forward scale in check (std x{growth['bn']:.3g} from depth {depths[0]} to "
                f"{depths[-1]}) but its input-gradient scale grows x{bn_grad[-1] / bn_grad[0]:.3g}: the gradient "
                "explosion of deep BatchNorm networks at init (Yang et al. 2019, A Mean Field Theory of Batch "
                "Normalization); Fixup and NF keep both bounded."
            )
        return Analysis(Verdict(outcome, self.rule, numbers, reason), tables, plots, notes, missing)

    def estimated_cpu_minutes(self, scale) -> float:
        """8 ResNet-20 runs of 300 steps plus the depth curve."""
        return {"smoke": 0.3, "cpu": 3.0, "gpu": 600.0}[scale]


def init_scale(arm: str, depth: int, width: float, img: int, batch: int = 8) -> dict:
    """Std of the last feature map and input-gradient scale of a fresh ResNet of ``depth`` (None when non-finite)."""
    import torch

    from normlight.models.resnet import cifar_resnet

    norm, variant = ARMS[arm]
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = cifar_resnet(depth, width=width, img_size=img, in_chans=1, norm=norm, variant=variant)
    model.train()  # BatchNorm normalizes with the batch's own statistics, as in the first training step
    x = torch.randn(batch, 1, img, img, generator=gen, requires_grad=True)
    h = model.forward_features(x)
    r = torch.randn(h.shape, generator=gen)
    out_std = float(h.detach().float().std())
    grad_scale = math.nan
    if math.isfinite(out_std):
        (g,) = torch.autograd.grad((h * r).sum(), x)
        grad_scale = float(g.norm() / math.sqrt(g.numel()))
    return {k: (v if math.isfinite(v) else None) for k, v in (("out_std", out_std), ("grad_scale", grad_scale))}


def _growth(stds: list) -> float:
    """Ratio of the deepest to the shallowest std (inf when the deepest overflowed; nan without data)."""
    if len(stds) < 2 or stds[0] is None:
        return math.nan
    if stds[-1] is None:
        return math.inf
    return stds[-1] / stds[0] if stds[0] > 0 else math.nan


def _part_a(growth: dict) -> str:
    g = growth
    if any(math.isnan(g[a]) for a in ("no_norm", "fixup", "nf")):
        return "inconclusive"
    ok = g["no_norm"] >= GROWTH_FAIL and all(1 / GROWTH_OK <= g[a] <= GROWTH_OK for a in ("fixup", "nf"))
    return "reproduced" if ok else "not reproduced"


def _part_b(acc: dict, bn: float) -> str:
    if math.isnan(bn) or not acc["fixup"] or not acc["nf"]:
        return "inconclusive"
    outs = []
    for a in ("fixup", "nf"):
        if mean_std(acc[a])[0] >= bn - ACC_TOL:
            outs.append("reproduced")
        elif max(acc[a]) < min(acc["bn"]) - ACC_TOL:
            outs.append("not reproduced")
        else:
            outs.append("inconclusive")
    return combine(dict(enumerate(outs)))


def _part_c(acc_none: list[float], runs: list[RunRecord], bn: float) -> str:
    if math.isnan(bn) or not acc_none:
        return "inconclusive"
    if all(v <= bn - NO_NORM_GAP for v in acc_none):
        return "reproduced"
    if all(v > bn - NO_NORM_GAP for v in acc_none):
        return "not reproduced"
    return "inconclusive"


def _at(scales: dict, arm: str, i: int, key: str):
    pts = scales.get(arm, [])
    return pts[i].get(key) if i < len(pts) else None


def _fmt(x: float) -> str:
    return "overflow" if math.isinf(x) else f"{x:.3g}x"


def _ms(values) -> list:
    return list(mean_std(values)) if values else [None, None]


def _draw_depth(depths, scales):
    def draw(ax):
        series = {}
        for arm in ARMS:
            pts = {d: [p["out_std"]] for d, p in zip(depths, scales.get(arm, [])) if p.get("out_std")}
            series[arm + (" (overflows)" if len(pts) < len(depths) else "")] = pts
        band_plot(ax, series, "depth (layers)", "std of the last feature map at init", logx=True)
        ax.set_yscale("log")

    return draw


STUDY = FixupAndNF()
