"""Attention entropy per layer (normalized for causal masks) and the max attention logit (catalog D1/D2).

Uses the blocks' diagnostics mode: ``block.attn.record_attention = True`` makes the attention compute
probabilities explicitly and store ``last_attn_probs`` (B, H, T, T) and ``last_max_logit``. The slow
explicit path is switched on only for diagnostic steps and switched off again right after.
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def normalized_entropy(probs: torch.Tensor, causal: bool) -> torch.Tensor:
    """Per-head mean normalized entropy, shape (H,), values in [0, 1].

    Row i of a causal map sees i+1 keys, so its entropy is divided by log(i+1) (row 0 has a single key
    and carries no information, so it is left out); a full map divides every row by log(T_k)."""
    p = probs.detach().float()
    t_q, t_k = p.shape[-2], p.shape[-1]
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)  # (B, H, T_q); 0*log(0) -> 0
    if causal:
        # queries are the last t_q positions of the t_k keys (t_q == t_k without a KV cache)
        visible = torch.arange(t_k - t_q + 1, t_k + 1, device=p.device, dtype=torch.float32)
    else:
        visible = torch.full((t_q,), float(t_k), device=p.device)
    keep = visible > 1
    if not bool(keep.any()):
        return torch.full((p.shape[1],), float("nan"))
    norm = ent[..., keep] / torch.log(visible[keep])
    return norm.mean(dim=(0, 2)).cpu()


class AttentionRecorder:
    """Turns on ``record_attention`` for every block that has it and reduces each map in a forward
    hook on ``block.attn`` as soon as it is produced, then drops the stored map."""

    def __init__(self, blocks):
        self.entropy: dict[int, torch.Tensor] = {}
        self.max_logit: dict[int, float] = {}
        self.handles = []
        self.attns = []
        for i, block in enumerate(blocks):
            attn = getattr(block, "attn", None)
            if attn is None or not hasattr(attn, "record_attention"):
                continue
            attn.record_attention = True
            self.attns.append(attn)
            self.handles.append(attn.register_forward_hook(self._hook(i)))

    def _hook(self, idx):
        def hook(attn, args, out):
            probs = getattr(attn, "last_attn_probs", None)
            if probs is not None:
                self.entropy[idx] = normalized_entropy(probs, bool(getattr(attn, "causal", False)))
                attn.last_attn_probs = None  # do not keep (B, H, T, T) alive
            logit = getattr(attn, "last_max_logit", None)
            if logit is not None:
                self.max_logit[idx] = float(logit)

        return hook

    def remove(self) -> dict[str, list[float]]:
        """Restore the fast path; return per-layer ``entropy`` (head mean), ``entropy_min`` (over heads)
        and ``max_logit`` lists in depth order."""
        for attn in self.attns:
            attn.record_attention = False
        for h in self.handles:
            h.remove()
        self.handles, self.attns = [], []
        layers = sorted(self.entropy)
        out = {
            "entropy": [float(self.entropy[i].mean()) for i in layers],
            "entropy_min": [float(self.entropy[i].min()) for i in layers],
        }
        if self.max_logit:
            out["max_logit"] = [self.max_logit[i] for i in sorted(self.max_logit)]
        return out


def overload_fraction(head_entropies, threshold: float = 0.9) -> float:
    """Fraction of heads whose normalized entropy exceeds ``threshold`` ("entropic overload")."""
    vals = [float(v) for v in head_entropies if not math.isnan(float(v))]
    return sum(v > threshold for v in vals) / len(vals) if vals else float("nan")
