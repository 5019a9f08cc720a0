"""Per-layer representation profile of the stream ``h_l`` (l = 0..L) and of every block's attention and MLP.

- effective rank (Roy & Vetterli 2007; used per layer by "Layer by Layer", Skean et al. 2025): on the centred token
  features Z (tokens x dim, at most ``max_tokens`` tokens evenly strided), with singular values s_k,
  ``p_k = s_k / sum_j s_j`` and ``erank = exp(-sum_k p_k log p_k)``; it equals r for r equal non-zero values;
- prompt entropy ("Layer by Layer", alpha = 1): per sequence, the Shannon entropy of the eigenvalues of the
  trace-normalized Gram matrix ``K = Z Z^T / tr(Z Z^T)`` of its tokens, i.e. of ``s_k^2 / sum_j s_j^2`` (nats),
  mean over at most ``max_sequences`` sequences;
- residual RMS ``sqrt(mean h^2)`` and massive activations ``max|h| / median|h|`` (The Curse of Depth; Sun et al.
  2024, "Massive Activations in Large Language Models");
- dormant-neuron fraction per MLP (Sokar et al. 2023, "The Dormant Neuron Phenomenon"): for the hidden units
  ``a_i`` entering the MLP's output projection, ``s_i = E|a_i| / ((1/H) sum_k E|a_k|)``; unit i is dormant if
  ``s_i <= tau`` (``tau = 0.025``);
- attention entropy per layer: mean over heads and queries of the entropy of each attention row divided by the
  log of the number of keys it sees (normlight.diagnostics.attention), in [0, 1].

Cost: one block call per block and batch on the explicit (recorded) attention path.
"""

from __future__ import annotations

import math

import torch

from normlight.analysis.context import AnalysisContext
from normlight.analysis.result import AnalysisResult, Series
from normlight.diagnostics.attention import AttentionRecorder
from normlight.diagnostics.residual import stream_stats


def effective_rank(z: torch.Tensor, center: bool = True) -> float:
    """exp(entropy of the normalized singular values) of a (samples x features) matrix (Roy & Vetterli)."""
    z = z.double()
    if center:
        z = z - z.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(z)
    if float(s.sum()) <= 0.0:
        return float("nan")
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def prompt_entropy(z: torch.Tensor) -> float:
    """Entropy (nats) of the eigenvalues of the trace-normalized Gram matrix of one sequence's tokens (T x dim)."""
    s2 = torch.linalg.svdvals(z.double()).square()
    if float(s2.sum()) <= 0.0:
        return float("nan")
    lam = s2 / s2.sum()
    lam = lam[lam > 0]
    return float(-(lam * lam.log()).sum())


def dormant_fraction(mean_abs: torch.Tensor, tau: float = 0.025) -> float:
    """Fraction of units whose normalized score ``E|a_i| / mean_k E|a_k|`` is <= tau."""
    avg = mean_abs.mean()
    if float(avg) <= 0.0:
        return 1.0
    return float((mean_abs / avg <= tau).float().mean())


def _tokens(hs: list[torch.Tensor], max_tokens: int) -> torch.Tensor:
    z = torch.cat([h.reshape(-1, h.shape[-1]) for h in hs])
    return z[:: max(1, math.ceil(z.shape[0] / max_tokens))]


@torch.no_grad()
def run(ctx: AnalysisContext, max_tokens: int = 4096, max_sequences: int = 32, tau: float = 0.025) -> AnalysisResult:
    """Per-layer effective rank, prompt entropy, residual RMS, massive activations, dormant MLP units, attention entropy."""
    states, depth = ctx.states(), ctx.depth
    erank, pent, rms, massive = [], [], [], []
    for l in range(depth + 1):
        hs = [s[l] for s in states]
        erank.append(effective_rank(_tokens(hs, max_tokens)))
        seqs = [seq for h in hs for seq in h][:max_sequences] if hs[0].ndim == 3 else []
        pent.append(sum(prompt_entropy(s) for s in seqs) / len(seqs) if seqs else float("nan"))
        st = stream_stats(torch.cat([h.reshape(-1) for h in hs]))
        rms.append(st["rms"])
        massive.append(st["max_over_median"])

    # one pass per batch with the attention recorded and the MLP hidden units hooked (block by block from the cache)
    abs_sum: dict[int, torch.Tensor] = {}
    counts: dict[int, int] = {}

    def fc2_hook(idx):
        def hook(module, args):
            a = args[0].detach().float().abs().reshape(-1, args[0].shape[-1])
            abs_sum[idx] = abs_sum.get(idx, 0) + a.sum(0)
            counts[idx] = counts.get(idx, 0) + a.shape[0]

        return hook

    handles = []
    for i, blk in enumerate(ctx.layers.blocks):
        fc2 = getattr(getattr(blk, "mlp", None), "fc2", None)
        if isinstance(fc2, torch.nn.Linear):
            handles.append(fc2.register_forward_pre_hook(fc2_hook(i)))
    ent_sum, ent_n = [0.0] * depth, [0] * depth
    try:
        for hs in states:
            rec = AttentionRecorder(ctx.layers.blocks)
            try:
                for i in range(depth):
                    ctx.layers.block(i, hs[i])
                ctx.block_calls += depth
            finally:
                ent = rec.remove()["entropy"]
            for i, v in enumerate(ent[:depth]):
                if math.isfinite(v):
                    ent_sum[i] += v
                    ent_n[i] += 1
    finally:
        for h in handles:
            h.remove()
    dormant = [dormant_fraction(abs_sum[i] / counts[i], tau) if i in abs_sum else float("nan") for i in range(depth)]
    attn_entropy = [s / n if n else float("nan") for s, n in zip(ent_sum, ent_n)]
    return AnalysisResult(
        name="representations",
        scalars={
            "dormant_mean": _mean(dormant),
            "erank/first": erank[0],
            "erank/last": erank[-1],
            "rms_growth": rms[-1] / rms[0] if rms[0] > 0 else float("nan"),
        },
        series={
            "erank": Series("layer", erank),
            "prompt_entropy": Series("layer", pent),
            "rms": Series("layer", rms),
            "massive": Series("layer", massive),
            "dormant": Series("layer", dormant),
            "attn_entropy": Series("layer", attn_entropy),
        },
        tables={
            "per_layer": [
                {
                    "layer": l,
                    "erank": erank[l],
                    "prompt_entropy": pent[l],
                    "rms": rms[l],
                    "max_over_median": massive[l],
                    "dormant (block l)": dormant[l] if l < depth else None,
                    "attn_entropy (block l)": attn_entropy[l] if l < depth else None,
                }
                for l in range(depth + 1)
            ]
        },
        notes=[f"streams: layer l = h_l (input of block l, l = L the last output); dormant tau = {tau}"],
    )


def _mean(vals: list[float]) -> float:
    vals = [v for v in vals if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else float("nan")


run.paper = (
    "Skean et al. 2025, Layer by Layer; Sokar et al. 2023, The Dormant Neuron Phenomenon; "
    "Sun et al. 2025, The Curse of Depth"
)
