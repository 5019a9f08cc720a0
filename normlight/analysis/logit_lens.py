"""Logit lens: the loss when the stream after ``l`` blocks is read out directly through the model's final norm and
head (the early-exit loss of LayerSkip, Elhoushi et al. 2024; nostalgebraist's logit lens).

    L_l = CE( head(final_norm(h_l)), y ),   l = 0..L   (h_0 = embedding, h_L = last block's output)

``L_L`` is the model's own loss. For a ViT the readout includes its pooling. Cost: one readout per layer and
batch, no block call beyond the cache.
"""

from __future__ import annotations

import torch

from normlight.analysis.context import AnalysisContext
from normlight.analysis.result import AnalysisResult, Series


@torch.no_grad()
def run(ctx: AnalysisContext, tolerance: float = 0.05) -> AnalysisResult:
    """Next-token loss read out after every layer through the final norm and the head (LayerSkip early exit)."""
    layers, states = ctx.layers, ctx.states()
    losses, accs = [], []
    for l in range(ctx.depth + 1):
        total = correct = 0.0
        n = 0
        for (_, y), hs in zip(ctx.batches, states):
            bl, bc, bn = layers.loss_terms(layers.readout(hs[l]), y)
            total, correct, n = total + bl, correct + bc, n + bn
        losses.append(total / n)
        accs.append(correct / n)
    final = losses[-1]
    first = next((l for l, v in enumerate(losses) if v <= final * (1.0 + tolerance)), ctx.depth)
    return AnalysisResult(
        name="logit_lens",
        scalars={"final/loss": final, "first_layer_within_tolerance": float(first)},
        series={"loss/lens": Series("layer", losses), "acc/lens": Series("layer", accs)},
        tables={"per_layer": [{"layer": l, "loss": losses[l], "acc": accs[l]} for l in range(ctx.depth + 1)]},
        notes=[f"first_layer_within_tolerance: the first l with loss <= (1 + {tolerance}) x the final loss"],
    )


run.paper = "Elhoushi et al. 2024, LayerSkip: Enabling Early Exit Inference and Self-Speculative Decoding"
