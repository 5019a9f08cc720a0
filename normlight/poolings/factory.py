"""``create_pooling``: a pooling plugin built with the context it names, probed once (like ``create_norm``).

Context offered by keyword, passed only if the factory names it: ``num_heads`` (GGeM's default groups, the
attention poolings' heads), ``num_layers`` (multi-layer poolings), ``device``, ``dtype``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from normlight.errors import PluginError
from normlight.poolings.base import NORM_POSITIONS
from normlight.registry import call_with_context, resolve

_probed: set[Any] = set()


def declared(spec: Any, attr: str, default: Any = None) -> Any:
    """A pooling's declaration (``uses_class_token``, ``norm_position``, ...) read from its factory, unbuilt."""
    factory, _ = resolve("poolings", spec)
    return getattr(getattr(factory, "func", factory), attr, default)


def probe_pooling(module: Any, dim: int, label: str, num_layers: int | None) -> None:
    """Check a built pooling once: an nn.Module declaring a valid norm position, (2, 5, dim) -> finite (2, dim)."""
    if not isinstance(module, torch.nn.Module):
        raise PluginError(f"{label} returned {type(module).__name__}; a pooling factory must return a torch.nn.Module")
    pos = getattr(module, "norm_position", "pre")
    if pos not in NORM_POSITIONS:
        raise PluginError(f"{label} declares norm_position={pos!r}; it must be one of {NORM_POSITIONS}")
    ref = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    if ref is not None and ref.is_meta:
        return  # deferred initialization: nothing to run yet
    dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float32, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, dim, generator=g).to(device=device, dtype=dtype)
    kwargs = {}
    if getattr(module, "needs_hidden_states", False):
        kwargs["hidden_states"] = [
            torch.randn(2, 5, dim, generator=g).to(device=device, dtype=dtype) for _ in range(num_layers or 1)
        ]
    try:
        with torch.no_grad():
            y = copy.deepcopy(module)(x, **kwargs)
    except Exception as exc:
        raise PluginError(
            f"{label} failed on probe tokens of shape (2, 5, {dim}): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, dim):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise PluginError(f"{label} returned {got} for tokens of shape (2, 5, {dim}); a pooling returns (batch, dim)")
    if not torch.isfinite(y).all():
        raise PluginError(f"{label} returned non-finite values for finite probe tokens")


def create_pooling(
    spec: Any,
    dim: int,
    *,
    num_heads: int | None = None,
    num_layers: int | None = None,
    device: Any = None,
    dtype: Any = None,
    **options: Any,
):
    """Build a pooling module mapping tokens (B, T, D) to (B, D) from a name, class, callable or partial."""
    factory, label = resolve("poolings", spec)
    context = dict(num_heads=num_heads, num_layers=num_layers, device=device, dtype=dtype)
    module = call_with_context(factory, label, (dim,), options, context)
    key = getattr(factory, "func", factory)
    if key not in _probed:
        probe_pooling(module, dim, label, num_layers)
        _probed.add(key)
    return module
