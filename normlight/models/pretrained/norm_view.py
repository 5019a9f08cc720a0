"""How a pre-norm model's norms read as the LayerNorm that GPT-2, nanoGPT and timm's ViT layouts hold.

A LayerNorm is written as it is (missing affine parameters as ones / zeros). An RMSNorm (eps inside the
root, all features) equals ``LayerNorm(weight, bias, eps)`` exactly when its input has zero mean over the
features, which holds when every writer into the residual stream is zero-mean over its output (model-width)
dim: that is what ``normlight.models.convert.to_pre_rmsnorm`` establishes. So an RMSNorm-converted model
exports exactly; once training has moved its writers off zero mean it no longer does, and the export is
refused naming the writers. Norm-free models (``norm="identity"``) have no LayerNorm form.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from normlight.errors import CheckpointError
from normlight.norms.layernorm import LayerNorm
from normlight.norms.rmsnorm import RMSNorm

Writers = list[tuple[str, torch.Tensor, int]]  # (name, tensor, dim of the model width)


def off_centre(writers: Writers) -> list[str]:
    """The writers whose mean over the model-width dim is not zero (relative to their size, up to rounding)."""
    bad = []
    for name, t, dim in writers:
        t = t.detach()
        tol = 100 * torch.finfo(t.dtype).eps * float(t.abs().max())
        mean = float(t.double().mean(dim=dim).abs().max())
        if mean > tol:
            bad.append(f"{name} (mean {mean:.2g})")
    return bad


def layernorm_params(
    norm: nn.Module, where: str, fmt: str, writers: Callable[[], Writers], like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(weight, bias, eps)`` of the LayerNorm that computes what ``norm`` computes in this model (absent
    parameters as ones / zeros of ``like``'s dtype and device)."""
    dim = next((getattr(norm, a) for a in ("num_features", "normalized_shape") if hasattr(norm, a)), None)
    dim = dim[0] if isinstance(dim, (tuple, list)) else dim
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    ones = torch.ones(dim, dtype=like.dtype, device=like.device) if dim else None
    if isinstance(norm, (LayerNorm, nn.LayerNorm)):
        eps = norm.eps
    elif isinstance(norm, RMSNorm) and norm.k == norm.num_features and not norm.eps_outside and norm.eps is not None:
        bad = off_centre(writers())
        if bad:
            raise CheckpointError(
                f"export {fmt}: {where} is an RMSNorm, which equals the layout's LayerNorm only on a zero-mean "
                f"residual stream, and these writers are not zero-mean: {', '.join(bad[:4])}. An RMSNorm-converted "
                "model (normlight.models.convert.to_pre_rmsnorm) exports exactly until training moves its writers"
            )
        eps = norm.eps
    else:
        raise CheckpointError(
            f"export {fmt}: {where} is {type(norm).__name__}; the {fmt} layout holds LayerNorms only, and only "
            "a LayerNorm, or an RMSNorm (eps inside the root, set explicitly) on a zero-mean residual stream, "
            "has an exact LayerNorm form there"
        )
    weight = weight.detach() if isinstance(weight, torch.Tensor) else ones
    bias = bias.detach() if isinstance(bias, nn.Parameter) else torch.zeros_like(weight)
    return weight, bias, float(eps)


def one_eps(values: list[float], fmt: str) -> float:
    """The single eps all norms share (the layouts have one); a clear error if they differ."""
    if len(set(values)) != 1:
        raise CheckpointError(
            f"export {fmt}: the norms use different eps values {sorted(set(values))}; the layout has one"
        )
    return values[0]
