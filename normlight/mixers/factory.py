"""``create_mixer``: a token-mixer plugin built with the context it names, probed once; ``check_mixer``.

A mixer is ``factory(dim, **options) -> nn.Module`` with ``forward(x, pos=None)`` mapping (B, T, D) to
(B, T, D). Context offered by keyword, passed only if the factory names it: ``num_heads``, ``causal``,
``bias``, ``dropout``, ``rope``, ``max_seq_len``, ``layer_idx``, ``num_layers``, ``device``, ``dtype``.
In a causal model a mixer must either take ``causal`` (and honour it) or declare ``supports_causal = True``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from normlight.errors import PluginError, PluginOptionError
from normlight.registry import accepts, call_with_context, resolve, spec_label

_probed: set[Any] = set()


def declared(spec: Any, attr: str, default: Any = None) -> Any:
    """A mixer's declaration (``supports_causal``, ``needs_grid``) read from its factory, unbuilt."""
    factory, _ = resolve("mixers", spec)
    return getattr(getattr(factory, "func", factory), attr, default)


def check_mixer(spec: Any, *, causal: bool, where: str) -> None:
    """Raise a clear error if the mixer cannot run causally in a causal model (``where`` names the model)."""
    if not causal:
        return
    factory, _ = resolve("mixers", spec)
    if accepts(factory, "causal"):
        return
    ok = getattr(getattr(factory, "func", factory), "supports_causal", None)
    if ok is True:
        return
    why = "mixes tokens from both sides" if ok is False else "neither takes `causal` nor declares supports_causal"
    raise PluginOptionError(
        f"mixer {spec_label(spec)} cannot run in {where}: it {why}, so later tokens would leak into earlier "
        "positions. Use mixer 'attention' or 'identity' there, or the mixer in a non-causal model (ViT)"
    )


def probe_mixer(module: Any, dim: int, label: str) -> None:
    """Check a built mixer once: an nn.Module mapping finite tokens (2, 4, dim) (a 2x2 grid) to finite (2, 4, dim)."""
    if not isinstance(module, torch.nn.Module):
        raise PluginError(f"{label} returned {type(module).__name__}; a mixer factory must return a torch.nn.Module")
    ref = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    if ref is not None and ref.is_meta:
        return
    dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float32, torch.device("cpu"))
    x = torch.randn(2, 4, dim, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    try:
        with torch.no_grad():
            y = copy.deepcopy(module)(x)
    except Exception as exc:
        raise PluginError(
            f"{label} failed on probe tokens of shape (2, 4, {dim}): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise PluginError(f"{label} returned {got} for tokens of shape (2, 4, {dim}); a mixer keeps the shape")
    if not torch.isfinite(y).all():
        raise PluginError(f"{label} returned non-finite values for finite probe tokens")


def create_mixer(
    spec: Any,
    dim: int,
    *,
    num_heads: int | None = None,
    causal: bool = False,
    bias: bool | None = None,
    dropout: float | None = None,
    rope: bool | None = None,
    max_seq_len: int | None = None,
    layer_idx: int | None = None,
    num_layers: int | None = None,
    device: Any = None,
    dtype: Any = None,
    **options: Any,
):
    """Build a token mixer (B, T, D) -> (B, T, D) from a name, class, callable or partial."""
    check_mixer(spec, causal=causal, where="a causal model")
    factory, label = resolve("mixers", spec)
    context = dict(
        num_heads=num_heads,
        causal=causal,
        bias=bias,
        dropout=dropout,
        rope=rope,
        max_seq_len=max_seq_len,
        layer_idx=layer_idx,
        num_layers=num_layers,
        device=device,
        dtype=dtype,
    )
    module = call_with_context(factory, label, (dim,), options, context)
    key = getattr(factory, "func", factory)
    if key not in _probed:
        probe_mixer(module, dim, label)
        _probed.add(key)
    return module
