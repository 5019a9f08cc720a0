"""Names -> factories for norms, placements and models (timm's ``create_*`` / ``list_*`` style).

A *spec* is a registered name (``"rmsnorm"``, ``"RMS-Norm"``, ``"mydist:rmsnorm"``), a class, a
callable or a ``functools.partial``. Building offers the context keywords ``layer_idx``,
``num_layers``, ``site``, ``layout``, ``device`` and ``dtype`` and passes each only if the factory
names it in its signature, so ``torch.nn.LayerNorm`` is a valid norm plugin as it is.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
from typing import Any, Callable

from normlight import plugins
from normlight.errors import AmbiguousNameError, PluginError, PluginOptionError, UnknownNameError

CONTEXT_KEYS = ("layer_idx", "num_layers", "site", "layout", "device", "dtype")
BUILTIN_DIST = "normlight"
_probed: set[Any] = set()


def normalize_name(name: str) -> str:
    """Lookup key of a name: case, ``-`` and ``_`` do not matter (``Layer-Norm`` == ``layernorm``)."""
    return name.strip().lower().replace("-", "").replace("_", "")


def lookup(kind: str, name: str) -> plugins.PluginEntry:
    """The entry registered under ``name`` (or ``distribution:name``); clear error if none or several."""
    what = kind[:-1]
    pool = plugins.entries(kind)
    dist, sep, short = name.rpartition(":")
    matches = [e for e in pool if normalize_name(e.name) == normalize_name(short)]
    if sep:
        matches = [e for e in matches if normalize_name(e.dist) == normalize_name(dist)]
    if not matches:
        names = list_names(kind)
        close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"unknown {what} {name!r}.{hint} Available {kind}: {', '.join(names)}")
    if len(matches) > 1:
        builtin = [e for e in matches if e.dist == BUILTIN_DIST]
        if len(builtin) == 1:  # a plugin never silently replaces a built-in; it stays selectable qualified
            return builtin[0]
        raise AmbiguousNameError(
            f"{what} name {name!r} is registered by several distributions: "
            + "; ".join(e.provenance for e in matches)
            + ". Select one explicitly as " + " or ".join(repr(e.qualified) for e in matches)
        )
    return matches[0]


def list_names(kind: str, pattern: str | None = None) -> list[str]:
    """Registered names of a kind without importing plugin code; duplicates are shown qualified."""
    import fnmatch

    by_key: dict[str, list[plugins.PluginEntry]] = {}
    for e in plugins.entries(kind):
        by_key.setdefault(normalize_name(e.name), []).append(e)
    names = []
    for group in by_key.values():
        builtin = [e for e in group if e.dist == BUILTIN_DIST]
        if len(group) == 1 or len(builtin) == 1:
            names.append((builtin or group)[0].name)
        names += [e.qualified for e in group if len(group) > 1 and e not in builtin[:1]]
    names = sorted(set(names))
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def resolve(kind: str, spec: Any) -> tuple[Callable[..., Any], str]:
    """A factory and a label naming it (with its distribution) for any spec."""
    if isinstance(spec, str):
        entry = lookup(kind, spec)
        return entry.load(), f"{kind[:-1]} plugin {entry.provenance}"
    if callable(spec):
        target = spec.func if isinstance(spec, functools.partial) else spec
        return spec, f"{kind[:-1]} {getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
    raise PluginOptionError(f"a {kind[:-1]} must be a name, a class, a callable or a functools.partial, got {spec!r}")


def call_with_context(factory: Callable[..., Any], label: str, args: tuple, options: dict, context: dict) -> Any:
    """Call ``factory(*args, **options, **accepted_context)``; unknown options are named clearly."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without signatures: pass options only
        params = {}
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    named -= set(list(params)[: len(args)])  # e.g. num_features, filled positionally
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in options:
        if params and key not in named and not open_kwargs:
            valid = ", ".join(sorted(named - set(CONTEXT_KEYS))) or "(none)"
            raise PluginOptionError(f"{label} does not accept option {key!r}; valid options: {valid}")
    kwargs = {k: v for k, v in context.items() if k in named and v is not None and k not in options}
    try:
        return factory(*args, **options, **kwargs)
    except (TypeError, ValueError) as exc:
        raise PluginOptionError(f"{label} rejected options {options or '{}'}: {exc}") from exc


def probe_norm(module: Any, num_features: int, label: str, layout: str | None = None) -> None:
    """Check a built norm once: an nn.Module whose output has the input's shape and is finite.

    Runs on a deep copy, so running statistics and step counters of ``module`` stay untouched.
    """
    import torch

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
        raise PluginError(f"{label} failed on a probe input of shape {tuple(shape)}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise PluginError(f"{label} returned {got} for an input of shape {tuple(shape)}; a norm must return the input's shape")
    if not torch.isfinite(y).all():
        raise PluginError(f"{label} returned non-finite values for a finite probe input of shape {tuple(shape)}")


def create_norm(spec: Any, num_features: int, *, layer_idx: int | None = None, num_layers: int | None = None,
                site: str | None = None, layout: str | None = None, device: Any = None, dtype: Any = None,
                **options: Any):
    """Build a norm module over the last dim (or over dim 1 with ``layout="channels_first"``).

    ``spec`` is a registered name, a class, a callable or a partial. Context keywords are passed only
    if the factory names them; a factory without ``layout`` is wrapped in the channels-first adapter.
    """
    from normlight.layout import ChannelsFirst

    factory, label = resolve("norms", spec)
    context = dict(layer_idx=layer_idx, num_layers=num_layers, site=site, device=device, dtype=dtype)
    takes_layout = _accepts(factory, "layout")
    if takes_layout and layout is not None:
        context["layout"] = layout
    module = call_with_context(factory, label, (num_features,), options, context)
    if layout == "channels_first" and not takes_layout:
        module = ChannelsFirst(module)
    key = (getattr(factory, "func", factory), layout)
    if key not in _probed:
        probe_norm(module, num_features, label, layout)
        _probed.add(key)
    return module


def _accepts(factory: Any, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def get_placement(spec: Any) -> type:
    """The block class of a placement given as a name or a class (a subclass of the suite's Block)."""
    cls, label = resolve("placements", spec)
    from normlight.blocks.base import Block

    if not (isinstance(cls, type) and issubclass(cls, Block)):
        raise PluginError(f"{label} is {cls!r}; a placement plugin must be a subclass of normlight.blocks.Block")
    return cls


def create_model(name: str, **kwargs: Any):
    """Build a model by preset name (``gpt-tiny``, ``vit-small``, ``resnet20``) or ``timm:<name>``."""
    if name.lower().startswith("timm:"):
        from normlight.models.timm_adapter import create_timm_model

        return create_timm_model(name.split(":", 1)[1], **kwargs)
    factory, label = resolve("models", name)
    return call_with_context(factory, label, (), kwargs, {})


def list_norms(pattern: str | None = None) -> list[str]:
    """Registered norm names, built-in and discovered, without importing plugin code."""
    return list_names("norms", pattern)


def list_placements(pattern: str | None = None) -> list[str]:
    """Registered placement names (``pre``, ``post``, ``peri``, ...)."""
    return list_names("placements", pattern)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model presets; any timm model that accepts ``norm_layer`` is also ``timm:<name>``."""
    return list_names("models", pattern)
