"""``create_depth_regularizer``: one block's depth regularizer built with its context, probed once.

A depth regularizer is ``factory(**options) -> nn.Module`` with ``forward(x, h)`` (block input and output,
both (B, T, D)) returning the next block's input. Context offered by keyword, passed only if the factory
names it: ``layer_idx``, ``num_layers``, ``device``, ``dtype``. A module may expose ``drop_rate`` and
``exit_weight`` (a positive early-exit loss weight makes the model return early exits while training).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from normlight.errors import PluginError
from normlight.registry import call_with_context, resolve

_probed: set[Any] = set()


def probe_depth_regularizer(module: Any, label: str) -> None:
    """Check a built regularizer once: an nn.Module mapping finite (x, h) to a finite tensor of x's shape."""
    if not isinstance(module, torch.nn.Module):
        raise PluginError(f"{label} returned {type(module).__name__}; a depth regularizer must be a torch.nn.Module")
    g = torch.Generator().manual_seed(0)
    x, h = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    m = copy.deepcopy(module)
    for mode in (True, False):
        try:
            with torch.no_grad():
                y = m.train(mode)(x, h)
        except Exception as exc:
            raise PluginError(f"{label} failed on a probe (train={mode}): {type(exc).__name__}: {exc}") from exc
        if not isinstance(y, torch.Tensor) or y.shape != x.shape or not torch.isfinite(y).all():
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise PluginError(
                f"{label} returned {got} (train={mode}) for x, h of shape (2, 3, 8); expected finite (2, 3, 8)"
            )


def create_depth_regularizer(
    spec: Any,
    *,
    layer_idx: int | None = None,
    num_layers: int | None = None,
    device: Any = None,
    dtype: Any = None,
    **options: Any,
):
    """Build the depth regularizer of one block from a name, class, callable or partial."""
    factory, label = resolve("depth_regularizers", spec)
    context = dict(layer_idx=layer_idx, num_layers=num_layers, device=device, dtype=dtype)
    module = call_with_context(factory, label, (), options, context)
    key = getattr(factory, "func", factory)
    if key not in _probed:
        probe_depth_regularizer(module, label)
        _probed.add(key)
    return module
