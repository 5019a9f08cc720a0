"""Execution-order interventions on a frozen model ("Transformer Layers as Painters", Sun et al. 2024/2025):
the change of validation loss and accuracy when the layers run differently.

- ``skip i``: block i removed (the stream passes unchanged);
- ``swap i``: blocks i and i+1 run in the opposite order;
- ``repeat i``: block i runs twice in a row;
- ``parallel middle``: the middle blocks (all but the first and last ``keep_ends``) each run on the same input and
  their outputs are averaged, ``h' = (1/M) * sum_j block_j(h)`` (the paper's parallel execution, from general
  knowledge of the paper);
- ``reverse middle``: the middle blocks run in reverse order.

Each row is ``Δ = metric(intervention) - metric(full model)``. Cost: about ``3L + 2`` plan evaluations, each
starting from the cached stream at the first changed position.
"""

from __future__ import annotations

from normlight.analysis.context import AnalysisContext, Plan
from normlight.analysis.layers import AnalysisInputError
from normlight.analysis.result import AnalysisResult, Series


def interventions(depth: int, keep_ends: int = 1) -> list[tuple[str, str, int | None, Plan]]:
    """``(kind, label, layer, plan)`` for every intervention on a model of ``depth`` blocks."""
    full = list(range(depth))
    out = []
    for i in range(depth):
        out.append(("skip", f"skip {i}", i, Plan.without(depth, removed=[i])))
    for i in range(depth - 1):
        steps = full[:i] + [i + 1, i] + full[i + 2 :]
        out.append(("swap", f"swap {i},{i + 1}", i, Plan(tuple(steps))))
    for i in range(depth):
        out.append(("repeat", f"repeat {i}", i, Plan(tuple(full[: i + 1] + full[i:]))))
    middle = full[keep_ends : depth - keep_ends]
    if len(middle) >= 2:
        head, tail = full[:keep_ends], full[depth - keep_ends :]
        out.append(("parallel", f"parallel {middle[0]}..{middle[-1]}", None, Plan((*head, tuple(middle), *tail))))
        out.append(("reverse", f"reverse {middle[0]}..{middle[-1]}", None, Plan((*head, *middle[::-1], *tail))))
    return out


def run(ctx: AnalysisContext, keep_ends: int = 1) -> AnalysisResult:
    """Δ val loss / accuracy when layers are skipped, swapped with a neighbour, repeated, or run in parallel."""
    if keep_ends < 0:
        raise AnalysisInputError(f"painters: keep_ends must be >= 0, got {keep_ends}")
    base = ctx.baseline()
    rows, per_kind = [], {"skip": [], "swap": [], "repeat": []}
    result = AnalysisResult(name="painters", scalars={"baseline/loss": base.loss})
    for kind, label, layer, plan in interventions(ctx.depth, keep_ends):
        e = ctx.evaluate(plan)
        d_loss, d_acc = e.loss - base.loss, e.acc - base.acc
        rows.append({"intervention": label, "kind": kind, "loss": e.loss, "delta_loss": d_loss, "delta_acc": d_acc})
        if kind in per_kind:
            per_kind[kind].append(d_loss)
        else:
            result.scalars[f"delta_loss/{kind}_middle"] = d_loss
            result.scalars[f"delta_acc/{kind}_middle"] = d_acc
    for kind, vals in per_kind.items():
        result.series[f"delta_loss/{kind}"] = Series("layer", vals)
    result.tables["interventions"] = rows
    return result


run.paper = "Sun et al. 2025, Transformer Layers as Painters"
