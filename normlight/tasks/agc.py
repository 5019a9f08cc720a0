"""Adaptive gradient clipping (AGC), unit-wise, as in NFNets (Brock et al. 2021, "High-Performance
Large-Scale Image Recognition Without Normalization").

For every output unit i of a parameter W (a row of a linear weight, one output filter of a conv, the
whole tensor for vectors and scalars)::

    max_i = clipping * max(||W_i||, eps)
    G_i  <- G_i * max_i / max(||G_i||, 1e-6)      only where ||G_i|| > max_i

Call it between ``backward()`` and ``optimizer.step()``. The paper leaves the final classifier
unclipped; pass its parameter names in ``exclude`` to do the same.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def _unit_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm per output unit (dim 0) for matrices and kernels, of the whole tensor otherwise; keeps dims."""
    if t.ndim <= 1:
        return t.norm()
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)), keepdim=True)


@torch.no_grad()
def adaptive_grad_clip_(
    parameters_or_model, clipping: float = 0.01, eps: float = 1e-3, exclude: Iterable[str] = ()
) -> None:
    """Clip gradients in place, unit-wise, relative to the norm of the weights they update.

    Args:
        parameters_or_model: an ``nn.Module`` (its named parameters; ``exclude`` applies) or an
            iterable of parameters (``exclude`` must then be empty).
        clipping: lambda, the largest allowed ratio ||G_i|| / max(||W_i||, eps). NFNet default 0.01.
        eps: floor on the weight norm so zero-initialized weights can still move (default 1e-3).
        exclude: parameter-name prefixes left unclipped, e.g. ``("fc.",)`` for the classifier.
    """
    if clipping <= 0:
        raise ValueError(f"adaptive_grad_clip_: clipping must be > 0, got {clipping}")
    exclude = tuple(exclude)
    if isinstance(parameters_or_model, nn.Module):
        params = [p for n, p in parameters_or_model.named_parameters() if not (exclude and n.startswith(exclude))]
    else:
        if exclude:
            raise ValueError("adaptive_grad_clip_: exclude needs parameter names; pass the model, not its parameters")
        params = [parameters_or_model] if isinstance(parameters_or_model, torch.Tensor) else list(parameters_or_model)
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        max_norm = clipping * _unit_norm(p.detach().float()).clamp_min(eps)
        g_norm = _unit_norm(g.float())
        scale = torch.where(g_norm > max_norm, max_norm / g_norm.clamp_min(1e-6), torch.ones_like(g_norm))
        g.mul_(scale.to(g.dtype))
