"""Names -> factories for every plugin kind (timm's ``_registry``: lookup and listing, no building).

A *spec* is a registered name (``"rmsnorm"``, ``"RMS-Norm"``, ``"mydist:rmsnorm"``), a class, a
callable or a ``functools.partial``. :func:`call_with_context` offers the context keywords
(``CONTEXT_KEYS``) and passes each only if the factory names it in its signature, so
``torch.nn.LayerNorm`` is a valid norm plugin as it is. Each layer owns its factory:
``normlight.norms.factory.create_norm``, ``normlight.blocks.factory.get_placement``,
``normlight.models.factory.create_model``.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
from typing import Any, Callable

from normlight import plugins
from normlight.errors import AmbiguousNameError, PluginOptionError, UnknownNameError

CONTEXT_KEYS = (
    "layer_idx",
    "num_layers",
    "site",
    "layout",
    "device",
    "dtype",
    "num_heads",
    "total_steps",
    "warmup_steps",
)
# The training schedule, in training forward calls (optimizer steps x gradient accumulation): known only once a
# Trainer exists, so the training task fills it in (normlight.tasks.base) before the first training step.
SCHEDULE_KEYS = ("total_steps", "warmup_steps")
BUILTIN_DIST = "normlight"


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
            + ". Select one explicitly as "
            + " or ".join(repr(e.qualified) for e in matches)
        )
    return matches[0]


def list_names(kind: str, pattern: str | None = None) -> list[str]:
    """Registered names of a kind without importing plugin code; duplicates are shown qualified."""
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


def spec_label(spec: Any) -> str:
    """A short name of a spec for messages: the name as given (quoted), or a class's or callable's dotted name."""
    if isinstance(spec, str):
        return repr(spec)
    target = spec.func if isinstance(spec, functools.partial) else spec
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


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
            valid = ", ".join(sorted(named - set(CONTEXT_KEYS) - set(context))) or "(none)"
            raise PluginOptionError(f"{label} does not accept option {key!r}; valid options: {valid}")
    kwargs = {k: v for k, v in context.items() if k in named and v is not None and k not in options}
    try:
        return factory(*args, **options, **kwargs)
    except (TypeError, ValueError) as exc:
        raise PluginOptionError(f"{label} rejected options {options or '{}'}: {exc}") from exc


def accepts(factory: Any, name: str) -> bool:
    """True if ``factory``'s signature names the keyword ``name``."""
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def list_norms(pattern: str | None = None) -> list[str]:
    """Registered norm names, built-in and discovered, without importing plugin code."""
    return list_names("norms", pattern)


def list_placements(pattern: str | None = None) -> list[str]:
    """Registered placement names (``pre``, ``post``, ``peri``, ...)."""
    return list_names("placements", pattern)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model presets; any timm model that accepts ``norm_layer`` is also ``timm:<name>``."""
    return list_names("models", pattern)


def list_poolings(pattern: str | None = None) -> list[str]:
    """Registered poolings: how a ViT (``pool``) or GPT (``readout``) reads one vector out of its tokens."""
    return list_names("poolings", pattern)


def list_residuals(pattern: str | None = None) -> list[str]:
    """Registered residual connections: how a block's branch output joins the stream (``add``, ``gate``, ...)."""
    return list_names("residuals", pattern)


def list_mixers(pattern: str | None = None) -> list[str]:
    """Registered token mixers of a block (``attention``, ``pool``, ``identity``)."""
    return list_names("mixers", pattern)


def list_depth_regularizers(pattern: str | None = None) -> list[str]:
    """Registered depth regularizers (``stochastic_depth``, ``drop_path``, ``layerskip``); off by default."""
    return list_names("depth_regularizers", pattern)
