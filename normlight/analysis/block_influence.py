"""Block Influence per block and per sub-layer (ShortGPT, Men et al. 2024; "What Matters in Transformers?",
He et al. 2024, for the sub-layers).

    BI_l = 1 - E_{x,t}[ cos(h_{l,t}, h_{l+1,t}) ]

over every token ``t`` of every evaluation sequence, with ``h_l`` the stream entering block ``l`` and ``h_{l+1}``
the stream leaving it. Low BI = the block barely changes the direction of the stream (near-identity,
redundant); ShortGPT removes the lowest-BI blocks first. Sub-layers: ``m_l`` is block ``l`` run on ``h_l`` with
its MLP branch zeroed (for Pre-LN exactly ``h_l + attn(norm(h_l))``), and

    BI_attn,l = 1 - E[cos(h_l, m_l)],    BI_mlp,l = 1 - E[cos(m_l, h_{l+1})]

For placements with a norm on the stream after a sub-layer (Post-LN, DeepNorm) ``m_l`` still carries that
norm, so their sub-layer split is an approximation. Cost: one extra block call per block and batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from normlight.analysis.context import AnalysisContext, dropped_sublayers
from normlight.analysis.result import AnalysisResult, Series


def cos_sum(a: torch.Tensor, b: torch.Tensor) -> tuple[float, int]:
    """Sum of cos(a_t, b_t) over all positions (features on the last dim) and the number of positions."""
    cos = F.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)
    return float(cos.sum()), cos.numel()


@torch.no_grad()
def influence(ctx: AnalysisContext) -> dict[str, list[float]]:
    """``{"block": [BI_0..BI_{L-1}], "attn": [...], "mlp": [...]}`` (computed once per context)."""
    if "block_influence" in ctx.memo:
        return ctx.memo["block_influence"]
    states, layers, depth = ctx.states(), ctx.layers, ctx.depth
    sums = {k: [0.0] * depth for k in ("block", "attn", "mlp")}
    count = [0] * depth
    for hs in states:
        for i in range(depth):
            with dropped_sublayers(layers, [(i, "mlp")]):
                mid = layers.block(i, hs[i])
            ctx.block_calls += 1
            for key, (a, b) in (("block", (hs[i], hs[i + 1])), ("attn", (hs[i], mid)), ("mlp", (mid, hs[i + 1]))):
                s, n = cos_sum(a, b)
                sums[key][i] += s
            count[i] += n
    out = {k: [1.0 - s / c for s, c in zip(v, count)] for k, v in sums.items()}
    ctx.memo["block_influence"] = out
    return out


def run(ctx: AnalysisContext) -> AnalysisResult:
    """Block Influence 1 - cos(h_in, h_out) per block and per attention / MLP sub-layer (ShortGPT)."""
    bi = influence(ctx)
    blocks = bi["block"]
    order = sorted(range(len(blocks)), key=lambda i: (blocks[i] != blocks[i], blocks[i]))  # NaN last
    return AnalysisResult(
        name="block_influence",
        scalars={"lowest_block": float(order[0]), "mean/block": sum(blocks) / len(blocks)},
        series={f"bi/{k}": Series("layer", v) for k, v in bi.items()},
        tables={
            "per_block": [
                {"layer": i, "bi": bi["block"][i], "bi_attn": bi["attn"][i], "bi_mlp": bi["mlp"][i]}
                for i in range(len(blocks))
            ]
        },
    )


run.paper = "Men et al. 2024, ShortGPT: Layers in Large Language Models are More Redundant Than You Expect"
