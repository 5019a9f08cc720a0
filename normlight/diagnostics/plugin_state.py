"""Learned (and scheduled) scalars that belong to a plugin: GeM p per group, DWA weights, residual gates,
LAuReL weights, drop-path rates (depth-and-blocks.md, diagnostic 28).

Any module of the model that defines ``diagnostics() -> dict[str, float]`` is read; each value is logged as
``diag/plugin/<module path>/<name>``, e.g. ``diag/plugin/pooling/p_g0``, ``diag/plugin/blocks.3.depth_residual/w00``,
``diag/plugin/blocks.0.attn_residual/gate``, ``diag/plugin/depth_regularizer.5/drop_rate``.
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def plugin_scalars(model: torch.nn.Module) -> dict[str, float]:
    """Every finite scalar reported by a module's ``diagnostics()`` hook, keyed by module path."""
    out = {}
    for path, module in model.named_modules():
        hook = getattr(type(module), "diagnostics", None)
        if not callable(hook) or not path:
            continue
        for name, value in module.diagnostics().items():
            value = float(value)
            if math.isfinite(value):
                out[f"diag/plugin/{path}/{name}"] = value
    return out
