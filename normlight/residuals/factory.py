"""``create_residual``: a residual plugin for one site of one layer, built with its context, probed once.

Context offered by keyword, passed only if the factory names it: ``site`` (``attn``, ``mlp``, ``depth``,
``value``), ``layer_idx``, ``num_layers``, ``num_heads``, ``device``, ``dtype``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from normlight.errors import PluginError
from normlight.registry import call_with_context, resolve
from normlight.residuals.base import BRANCH_SITES, SITES

_probed: set[Any] = set()


def declared_sites(spec: Any) -> tuple:
    """The sites a residual plugin acts on (its ``sites`` declaration; default ``("attn", "mlp")``)."""
    factory, label = resolve("residuals", spec)
    sites = tuple(getattr(getattr(factory, "func", factory), "sites", BRANCH_SITES))
    bad = [s for s in sites if s not in SITES]
    if bad or not sites:
        raise PluginError(f"{label} declares sites {sites!r}; each must be one of {SITES}")
    return sites


def probe_residual(module: Any, dim: int, site: str, label: str, layer_idx: int, num_heads: int) -> None:
    """Check a built residual once on a finite probe: an nn.Module returning the stream's (or values') shape."""
    if not isinstance(module, torch.nn.Module):
        raise PluginError(f"{label} returned {type(module).__name__}; a residual factory must return a torch.nn.Module")
    ref = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    if ref is not None and ref.is_meta:
        return
    dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float32, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    m = copy.deepcopy(module)
    if site in BRANCH_SITES:
        args, want = (rand(2, 3, dim), rand(2, 3, dim)), (2, 3, dim)
    elif site == "depth":
        args, want = ([rand(2, 3, dim) for _ in range(layer_idx + 2)],), (2, 3, dim)
    else:  # value: probe as the first layer would run it
        if layer_idx != 0:
            return
        if hasattr(type(m), "link_layers"):
            type(m).link_layers([m])
        args, want = (rand(2, num_heads, 3, dim // num_heads),), (2, num_heads, 3, dim // num_heads)
    try:
        with torch.no_grad():
            y = m(*args)
    except Exception as exc:
        raise PluginError(f"{label} failed on a probe at site {site!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != want:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise PluginError(f"{label} returned {got} at site {site!r}; expected {want}")
    if not torch.isfinite(y).all():
        raise PluginError(f"{label} returned non-finite values at site {site!r} for a finite probe")


def create_residual(
    spec: Any,
    dim: int,
    *,
    site: str,
    layer_idx: int | None = None,
    num_layers: int | None = None,
    num_heads: int | None = None,
    device: Any = None,
    dtype: Any = None,
    **options: Any,
):
    """Build the residual module of ``site`` (one of ``SITES``) for one layer from a name, class or callable."""
    if site not in SITES:
        raise ValueError(f"unknown residual site {site!r}; choose one of {SITES}")
    factory, label = resolve("residuals", spec)
    context = dict(
        site=site, layer_idx=layer_idx, num_layers=num_layers, num_heads=num_heads, device=device, dtype=dtype
    )
    module = call_with_context(factory, label, (dim,), options, context)
    key = (getattr(factory, "func", factory), site)
    if key not in _probed:
        probe_residual(module, dim, site, label, layer_idx or 0, num_heads or 1)
        _probed.add(key)
    return module
