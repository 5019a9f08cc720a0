"""``create_norm``: build a norm plugin with its context, adapt its layout, probe it once (timm's ``create_norm``)."""

from __future__ import annotations

import copy
from typing import Any

import torch

from normlight.errors import PluginError
from normlight.layers.layout import ChannelsFirst
from normlight.registry import accepts, call_with_context, resolve

_probed: set[Any] = set()


def probe_norm(module: Any, num_features: int, label: str, layout: str | None = None) -> None:
    """Check a built norm once: an nn.Module whose output has the input's shape and is finite.

    Runs on a deep copy, so running statistics and step counters of ``module`` stay untouched.
    """
    if not isinstance(module, torch.nn.Module):
        raise PluginError(f"{label} returned {type(module).__name__}; a norm factory must return a torch.nn.Module")
    ref = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    if ref is not None and ref.is_meta:
        return  # deferred initialization (e.g. FSDP): nothing to run yet
    dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float32, torch.device("cpu"))
    shape = (2, num_features, 3, 3) if layout == "channels_first" else (2, 3, num_features)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    try:
        with torch.no_grad():
            y = copy.deepcopy(module)(x)
    except Exception as exc:
        raise PluginError(
            f"{label} failed on a probe input of shape {tuple(shape)}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise PluginError(
            f"{label} returned {got} for an input of shape {tuple(shape)}; a norm must return the input's shape"
        )
    if not torch.isfinite(y).all():
        raise PluginError(f"{label} returned non-finite values for a finite probe input of shape {tuple(shape)}")


BIAS_NAMES = ("bias", "beta")  # the additive (shift) parameters of the built-in norms (GRN calls its shift beta)


def drop_bias(module: torch.nn.Module) -> list[str]:
    """Remove a norm's additive parameters: each becomes a non-persistent zero buffer (the same
    computation without the shift: no parameter, no optimizer state, no state_dict key). Returns their names."""
    dropped = []
    for qual, sub in module.named_modules():
        for name in BIAS_NAMES:
            p = sub._parameters.get(name)
            if p is None:
                continue
            del sub._parameters[name]
            sub.register_buffer(name, torch.zeros_like(p.detach()), persistent=False)
            dropped.append(f"{qual}.{name}" if qual else name)
    return dropped


def create_norm(
    spec: Any,
    num_features: int,
    *,
    layer_idx: int | None = None,
    num_layers: int | None = None,
    site: str | None = None,
    layout: str | None = None,
    device: Any = None,
    dtype: Any = None,
    **options: Any,
):
    """Build a norm module over the last dim (or over dim 1 with ``layout="channels_first"``).

    ``spec`` is a registered name, a class, a callable or a partial. Context keywords are passed only
    if the factory names them; a factory without ``layout`` is wrapped in the channels-first adapter.
    ``bias=False`` works for every norm: a factory that does not take ``bias`` gets its additive
    parameters removed after construction (:func:`drop_bias`), as nanoGPT's ``bias=False`` has none.
    """

    factory, label = resolve("norms", spec)
    strip_bias = options.get("bias", True) is False and not accepts(factory, "bias")
    if strip_bias:
        options = {k: v for k, v in options.items() if k != "bias"}
    context = dict(layer_idx=layer_idx, num_layers=num_layers, site=site, device=device, dtype=dtype)
    takes_layout = accepts(factory, "layout")
    if takes_layout and layout is not None:
        context["layout"] = layout
    module = call_with_context(factory, label, (num_features,), options, context)
    if strip_bias:
        drop_bias(module)
    if layout == "channels_first" and not takes_layout:
        module = ChannelsFirst(module)
    key = (getattr(factory, "func", factory), layout)
    if key not in _probed:
        probe_norm(module, num_features, label, layout)
        _probed.add(key)
    return module
