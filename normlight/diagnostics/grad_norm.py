"""Gradient norms: the global pre-clip norm and a per-block profile over depth (catalog D7).

Lightning calls ``Callback.on_before_optimizer_step`` *before* it clips gradients (the precision
plugin runs the closure, then the ``on_before_optimizer_step`` hooks, then ``_clip_gradients``),
and after AMP un-scaling, so a norm taken there is the true pre-clip norm.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def global_grad_norm(parameters) -> torch.Tensor:
    """L2 norm of all gradients together, as a 0-dim fp32 tensor (0 if there are none)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)  # one fused pass; float32 accumulation below
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def module_grad_norm(module: nn.Module) -> float:
    """L2 norm of the gradients of one module's parameters (0.0 when none have a gradient)."""
    return float(global_grad_norm(module.parameters()))


def block_grad_norms(blocks) -> dict[str, list[float]]:
    """Per-block gradient norms in depth order; ``attn``/``mlp`` sub-branches too when a block has them."""
    out: dict[str, list[float]] = {"block": []}
    for block in blocks:
        out["block"].append(module_grad_norm(block))
        for part in ("attn", "mlp"):
            sub = getattr(block, part, None)
            if isinstance(sub, nn.Module):
                out.setdefault(part, []).append(module_grad_norm(sub))
    return {k: v for k, v in out.items() if len(v) == len(out["block"])}


def coefficient_of_variation(values) -> float:
    """std / mean of a profile (population std); 0 for a flat profile, nan when the mean is 0."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan")
    mean = sum(vals) / len(vals)
    if mean == 0:
        return float("nan")
    var = sum((v - mean) ** 2 for v in vals) / len(vals)
    return math.sqrt(var) / mean
