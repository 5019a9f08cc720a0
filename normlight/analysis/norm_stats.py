"""What the norm layers learned: per norm module, statistics of its learned parameters and running buffers, and
for batch-statistic norms the gap between train-mode (batch statistics) and eval-mode (running statistics)
validation loss.

- norm modules are the modules on a path containing ``norm`` (``norm1``, ``attn_out_norm``, ``q_norm``, the final
  ``norm``, ``pe_norms.3`` ...) that hold parameters or buffers, plus any module with
  ``uses_batch_statistics = True``; modules inside a norm are part of it;
- per parameter: mean, std, min, max; for gain-like parameters (``weight``, ``gamma``, ``g``, ``gain``,
  ``scale``) the fraction of entries with ``|gain| <= zero_tol`` (a gain that reached zero switches its feature
  off; "Transformers without Tears" and the Curse of Depth discuss gains as a depth signal);
- per floating-point buffer (running mean / variance ...): mean and std;
- ``gain/<site>`` series: the mean gain of the norm at a site (``norm1``, ``norm2``, ...) per block index;
- train-vs-eval gap: ``loss(norms in train mode) - loss(eval mode)`` on the evaluation batches, on a copy of
  the model with dropout off, for models with a batch-statistic norm (the EvoNorm, BN-in-transformers and
  PowerNorm papers discuss this inconsistency).
Cost: one full forward per batch, only when the model has a batch-statistic norm.
"""

from __future__ import annotations

import math
import re

import torch

from normlight.analysis.context import AnalysisContext
from normlight.analysis.result import AnalysisResult, Series

GAIN_NAMES = ("weight", "gamma", "g", "gain", "scale")
_NOT_NORMS = (torch.nn.Identity, torch.nn.ModuleList, torch.nn.ModuleDict, torch.nn.Sequential)
_BLOCK_SITE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def norm_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(path, module)`` of every norm in ``model`` (outermost only), in module order."""
    found: list[tuple[str, torch.nn.Module]] = []
    for name, mod in model.named_modules():
        if not name or any(name.startswith(p + ".") for p, _ in found):
            continue
        parts = name.lower().split(".")
        leaf = parts[-2] if parts[-1].isdigit() and len(parts) > 1 else parts[-1]  # pe_norms.3 -> pe_norms
        has_state = any(True for _ in mod.parameters()) or any(True for _ in mod.buffers())
        is_norm = "norm" in leaf and not isinstance(mod, _NOT_NORMS)
        if (is_norm and has_state) or getattr(mod, "uses_batch_statistics", False):
            found.append((name, mod))
    return found


def _stats(t: torch.Tensor) -> dict[str, float]:
    t = t.detach().double().flatten()
    return {
        "mean": float(t.mean()),
        "std": float(t.std()) if t.numel() > 1 else 0.0,
        "min": float(t.min()),
        "max": float(t.max()),
    }


@torch.no_grad()
def train_eval_gap(ctx: AnalysisContext) -> tuple[float, float]:
    """(loss with norms in train mode, loss in eval mode) on the evaluation batches; a copy of the model is used."""
    view = ctx.layers.copy()
    view.model.eval()
    for _, mod in norm_modules(view.model):
        if getattr(mod, "uses_batch_statistics", False):
            mod.train()
    total, n = 0.0, 0
    for x, y in ctx.batches:
        bl, _, bn = view.loss_terms(view.forward(x), y)
        total, n = total + bl, n + bn
    ctx.block_calls += ctx.depth * len(ctx.batches)
    return total / n, ctx.baseline().loss


def run(ctx: AnalysisContext, zero_tol: float = 1e-2) -> AnalysisResult:
    """Learned gains/biases and running statistics of every norm; train-vs-eval gap of batch-statistic norms."""
    rows, gains, by_site = [], [], {}
    mods = norm_modules(ctx.layers.model)
    for name, mod in mods:
        for pname, p in mod.named_parameters():
            st = _stats(p)
            row = {"norm": name, "class": type(mod).__name__, "tensor": pname, "kind": "param", **st}
            if pname.rsplit(".", 1)[-1] in GAIN_NAMES:
                near_zero = float((p.detach().abs() <= zero_tol).float().mean())
                row["near_zero"] = near_zero
                gains.append((p.numel(), near_zero, st["mean"]))
                m = _BLOCK_SITE.match(name)
                if m and "." not in pname:
                    by_site.setdefault(m.group(2), {})[int(m.group(1))] = st["mean"]
            rows.append(row)
        for bname, b in mod.named_buffers():
            if b.is_floating_point() and b.numel():
                st = _stats(b)
                rows.append({"norm": name, "class": type(mod).__name__, "tensor": bname, "kind": "buffer", **st})
    n_gain = sum(g[0] for g in gains)
    result = AnalysisResult(
        name="norm_stats",
        scalars={
            "norms": float(len(mods)),
            "gain_mean": sum(g[0] * g[2] for g in gains) / n_gain if n_gain else float("nan"),
            "gain_near_zero": sum(g[0] * g[1] for g in gains) / n_gain if n_gain else float("nan"),
        },
        tables={"tensors": rows},
    )
    for site, per_layer in sorted(by_site.items()):
        if len(per_layer) == ctx.depth:
            result.series[f"gain/{site}"] = Series("layer", [per_layer[i] for i in range(ctx.depth)])
    if any(getattr(m, "uses_batch_statistics", False) for _, m in mods):
        train_loss, eval_loss = train_eval_gap(ctx)
        result.scalars["train_mode/loss"] = train_loss
        result.scalars["train_eval_gap"] = train_loss - eval_loss if math.isfinite(train_loss) else float("nan")
    result.notes.append(f"near_zero: fraction of gain entries with |g| <= {zero_tol}")
    return result


run.paper = "Nguyen & Salazar 2019, Transformers without Tears; Sun et al. 2025, The Curse of Depth"
