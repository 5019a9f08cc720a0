"""Angular distance between the streams entering layer ``l`` and layer ``l+n`` for every ``l`` and ``n``, and the
contiguous block of ``n`` layers whose removal changes the stream least ("The Unreasonable Ineffectiveness of the
Deeper Layers", Gromov et al. 2024).

    d(l, l+n) = (1/pi) * arccos( cos(h_l[T], h_{l+n}[T]) ),  averaged over the evaluation sequences

``T`` is the last token of a causal LM (the only position that has seen the whole sequence) and the class token
(or the token mean) of a ViT. For each span ``n`` the block to prune is ``l* = argmin_l d(l, l+n)``: layers
``l*..l*+n-1``. Cost: no block call beyond the cache.
"""

from __future__ import annotations

import math

import torch

from normlight.analysis.context import AnalysisContext, angular
from normlight.analysis.result import AnalysisResult, Matrix, Series


@torch.no_grad()
def distances(ctx: AnalysisContext) -> list[list[float]]:
    """``D[l][n-1]`` = d(l, l+n) for l = 0..L-1, n = 1..L (NaN where l+n > L); computed once per context."""
    if "angular_distance" in ctx.memo:
        return ctx.memo["angular_distance"]
    depth = ctx.depth
    summaries = [[ctx.layers.summary(h) for h in hs] for hs in ctx.states()]
    out = [[float("nan")] * depth for _ in range(depth)]
    for l in range(depth):
        for n in range(1, depth - l + 1):
            d = torch.cat([angular(s[l], s[l + n]) for s in summaries])
            out[l][n - 1] = float(d.mean())
    ctx.memo["angular_distance"] = out
    return out


def best_spans(dist: list[list[float]]) -> list[tuple[int, float]]:
    """For n = 1..L: ``(l*, d(l*, l*+n))`` with the smallest distance (the earliest l on ties; NaN rows skipped)."""
    depth = len(dist)
    best = []
    for n in range(1, depth + 1):
        cands = [(dist[l][n - 1], l) for l in range(depth - n + 1) if math.isfinite(dist[l][n - 1])]
        d, l = min(cands) if cands else (float("nan"), 0)
        best.append((l, d))
    return best


def run(ctx: AnalysisContext) -> AnalysisResult:
    """Angular distance d(l, l+n) = arccos(cos(h_l, h_{l+n}))/pi at the last token; best block to drop per span n."""
    dist = distances(ctx)
    best = best_spans(dist)
    return AnalysisResult(
        name="angular_distance",
        scalars={"min_distance/n1": best[0][1], "best_start/n1": float(best[0][0])},
        series={
            "best_distance": Series("span n", [d for _, d in best], start=1),
            "best_start": Series("span n", [float(l) for l, _ in best], start=1),
        },
        tables={
            "best_span": [
                {"n": n, "start": l, "layers": f"{l}..{l + n - 1}", "distance": d}
                for n, (l, d) in enumerate(best, start=1)
            ]
        },
        matrices={"distance": Matrix(dist, rows="start layer l", cols="span n", col_start=1)},
    )


run.paper = "Gromov et al. 2024, The Unreasonable Ineffectiveness of the Deeper Layers"
