"""Removable depth: remove layers in the order a score gives and record validation loss / accuracy against the
number removed, without and (``heal_steps > 0``) with a short healing fine-tune.

Scores (orders):

- ``bi``: blocks by increasing Block Influence, the lowest first (ShortGPT, Men et al. 2024);
- ``angular``: for each ``n`` the contiguous block ``l*..l*+n-1`` with the smallest angular distance
  d(l, l+n) (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers"); not nested in ``n``;
- ``random``: the control, a seeded random order of blocks, mean over ``random_repeats`` orders;
- ``sublayer_bi``: attention and MLP sub-layers as separate candidates, by increasing sub-layer BI ("What
  Matters in Transformers?", He et al. 2024);
- ``finercut``: FinerCut (Zhang et al. 2024): sub-layers removed greedily, at each step the one whose removal
  changes the model's output least. "Change of the output" is operationalized here as the mean angular distance
  between the pruned and the full model's logits per position (the paper's exact distance is not in our
  references). Cost: about ``(2L)^2 / 2`` plan evaluations, the most expensive score.

A removed block is skipped (the stream passes unchanged); a removed sub-layer has its output zeroed (its
output norm too, where the placement has one). ``max_removed/<score>`` is the largest ``k`` such that removing
1..k layers in that order keeps the loss within ``(1 + tolerance)`` of the full model's. Healing
(``heal_steps``): the pruned model is fine-tuned (AdamW, ``heal_lr``) on the training data and re-evaluated;
the full model gets the same fine-tune, and ``max_removed_healed`` compares against that, so an under-trained
model's gain from extra steps is not counted as removable depth.
"""

from __future__ import annotations

import random

from normlight.analysis.angular_distance import best_spans, distances
from normlight.analysis.block_influence import influence
from normlight.analysis.context import AnalysisContext, Eval, Plan
from normlight.analysis.layers import AnalysisInputError
from normlight.analysis.result import AnalysisResult, Series

BLOCK_SCORES = ("bi", "angular", "random")
SUBLAYER_SCORES = ("sublayer_bi", "finercut")
SCORES = BLOCK_SCORES + SUBLAYER_SCORES


def _nan_last(v: float) -> tuple:
    return (v != v, v)


def block_orders(ctx: AnalysisContext, score: str, random_repeats: int) -> list[list[list[int]]]:
    """For a block score: one list per order (several for ``random``) of the removed sets for k = 1..L-1."""
    depth = ctx.depth
    if score == "bi":
        bi = influence(ctx)["block"]
        order = sorted(range(depth), key=lambda i: _nan_last(bi[i]))
        return [[sorted(order[:k]) for k in range(1, depth)]]
    if score == "angular":
        spans = best_spans(distances(ctx))
        return [[list(range(spans[n - 1][0], spans[n - 1][0] + n)) for n in range(1, depth)]]
    rng = random.Random(ctx.seed)
    orders = []
    for _ in range(random_repeats):
        perm = list(range(depth))
        rng.shuffle(perm)
        orders.append([sorted(perm[:k]) for k in range(1, depth)])
    return orders


def sublayer_sets(ctx: AnalysisContext, score: str) -> list[list[tuple[int, str]]]:
    """For a sub-layer score: the dropped sets for k = 1..2L-1."""
    candidates = [(i, kind) for i in range(ctx.depth) for kind in ("attn", "mlp")]
    if score == "sublayer_bi":
        bi = influence(ctx)
        order = sorted(candidates, key=lambda c: _nan_last(bi[c[1]][c[0]]))
        return [sorted(order[:k]) for k in range(1, len(candidates))]
    dropped: list[tuple[int, str]] = []
    sets = []
    for _ in range(len(candidates) - 1):
        trials = [
            (ctx.evaluate(Plan.without(ctx.depth, drop=dropped + [c]), output_distance=True).out_distance, c)
            for c in candidates
            if c not in dropped
        ]
        dropped.append(min(trials, key=lambda t: _nan_last(t[0]))[1])
        sets.append(sorted(dropped))
    return sets


def max_removed(losses: list[float], tolerance: float) -> int:
    """Largest k such that losses[1..k] all stay within (1 + tolerance) * losses[0] (0 if none does)."""
    limit = losses[0] * (1.0 + tolerance)
    k = 0
    while k + 1 < len(losses) and losses[k + 1] <= limit:
        k += 1
    return k


def _label(removed) -> str:
    return ",".join(str(r) if isinstance(r, int) else f"{r[0]}.{r[1]}" for r in removed) or "-"


def run(
    ctx: AnalysisContext,
    scores: list[str] | tuple[str, ...] = ("bi", "angular", "random", "sublayer_bi"),
    tolerance: float = 0.05,
    random_repeats: int = 3,
    heal_steps: int = 0,
    heal_lr: float = 1e-4,
    heal_scores: list[str] | tuple[str, ...] = ("bi",),
) -> AnalysisResult:
    """Validation loss vs layers removed (by BI, angular distance, random, sub-layer BI, FinerCut), optionally healed."""
    bad = [s for s in [*scores, *(heal_scores if heal_steps else ())] if s not in SCORES]
    if bad:
        raise AnalysisInputError(f"removal_curve: unknown score(s) {bad}; choose from {', '.join(SCORES)}")
    if ctx.depth < 2:
        raise AnalysisInputError("removal_curve needs a model with at least 2 blocks")
    base = ctx.baseline()
    result = AnalysisResult(name="removal_curve", scalars={"baseline/loss": base.loss, "baseline/acc": base.acc})
    rows = []
    healed_base: Eval | None = None
    if heal_steps and heal_scores:
        healed_base = ctx.heal(Plan.full(ctx.depth), heal_steps, heal_lr)
        result.scalars["baseline_healed/loss"] = healed_base.loss
    for score in scores:
        if score in BLOCK_SCORES:
            orders = block_orders(ctx, score, random_repeats)
            plans = [[Plan.without(ctx.depth, removed=s) for s in order] for order in orders]
            sets = orders[0]
            axis = "blocks removed"
        else:
            sets = sublayer_sets(ctx, score)
            plans = [[Plan.without(ctx.depth, drop=s) for s in sets]]
            axis = "sub-layers removed"
        evals = [[ctx.evaluate(p) for p in order] for order in plans]
        losses = [base.loss] + [sum(e[k].loss for e in evals) / len(evals) for k in range(len(sets))]
        accs = [base.acc] + [sum(e[k].acc for e in evals) / len(evals) for k in range(len(sets))]
        result.series[f"loss/{score}"] = Series(axis, losses)
        result.series[f"rel_loss/{score}"] = Series(axis, [v / base.loss - 1.0 for v in losses])
        result.series[f"acc/{score}"] = Series(axis, accs)
        result.scalars[f"max_removed/{score}"] = float(max_removed(losses, tolerance))
        healed = None
        if healed_base is not None and score in heal_scores:
            healed = [healed_base.loss] + [ctx.heal(p, heal_steps, heal_lr).loss for p in plans[0]]
            result.series[f"loss_healed/{score}"] = Series(axis, healed)
            result.scalars[f"max_removed_healed/{score}"] = float(max_removed(healed, tolerance))
        for k in range(len(sets) + 1):
            row = {
                "score": score,
                "removed": k,
                "layers": _label(sets[k - 1]) if k and score != "random" else ("-" if not k else "mean of orders"),
                "loss": losses[k],
                "rel_increase": losses[k] / base.loss - 1.0,
                "acc": accs[k],
            }
            if healed is not None:
                row["loss_healed"] = healed[k]
            rows.append(row)
    result.tables["curve"] = rows
    result.notes.append(
        f"max_removed = largest k whose loss stays within {tolerance:.0%} of the full model's for every k' <= k"
    )
    return result


run.paper = (
    "Men et al. 2024 (ShortGPT); Gromov et al. 2024 (Unreasonable Ineffectiveness of the Deeper Layers); "
    "Zhang et al. 2024 (FinerCut)"
)
