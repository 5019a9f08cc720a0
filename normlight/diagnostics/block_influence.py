"""Block influence BI = 1 - mean cos(h_in, h_out) per block on a fixed probe batch (ShortGPT; D9).

Run at validation time on a probe batch captured once, so values are comparable across steps.
A block whose output has a different shape than its input (a strided ResNet stage) has no value.
"""

from __future__ import annotations

import torch

from normlight.diagnostics.residual import first_tensor


@torch.no_grad()
def block_influence(h_in: torch.Tensor, h_out: torch.Tensor) -> float:
    """1 - mean cosine similarity between input and output feature vectors at each position.

    Features are the last dim for token streams (B, T, C) and dim 1 for feature maps (B, C, H, W)."""
    if h_in.shape != h_out.shape:
        return float("nan")
    dim = 1 if h_in.ndim == 4 else -1
    cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=dim, eps=1e-8)
    return float(1.0 - cos.mean())


@torch.no_grad()
def probe_block_influence(model: torch.nn.Module, blocks, inputs) -> list[float]:
    """Forward ``inputs`` through ``model`` once and return the influence of each block in depth order."""
    values: dict[int, float] = {}

    def hook(idx):
        def fn(module, args, out):
            h_in, h_out = (args[0] if args else None), first_tensor(out)
            if isinstance(h_in, torch.Tensor) and h_out is not None:
                values[idx] = block_influence(h_in, h_out)

        return fn

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    try:
        model(inputs)
    finally:
        for h in handles:
            h.remove()
    return [values.get(i, float("nan")) for i in range(len(handles))]
