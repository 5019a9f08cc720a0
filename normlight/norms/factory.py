"""``create_norm``: build a norm plugin with its context, adapt its layout, probe it once (timm's ``create_norm``).

Also here, because every norm of a model passes through ``create_norm``:

- per-site options: ``norm_kwargs = {"alpha_init": 0.5, "sites": {"final": {"alpha_init": 0.2}}}`` gives the
  norm built at site ``final`` its own options on top of the shared ones (``site_options``);
- ``norm_scope(**context)``: context for every ``create_norm`` call inside the ``with`` block (the training
  task passes the schedule, ``total_steps`` / ``warmup_steps``, this way) and a record of what was built
  (sites, modules, the schedule keys each factory asked for), which ``check_site_overrides`` and the task read.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from normlight.errors import PluginError, PluginOptionError
from normlight.layers.layout import ChannelsFirst
from normlight.registry import CONTEXT_KEYS, SCHEDULE_KEYS, accepts, call_with_context, resolve

_probed: set[Any] = set()
SITES_KEY = "sites"


@dataclass
class NormRecord:
    """One norm built inside a :func:`norm_scope`."""

    site: str | None
    module: torch.nn.Module
    overrides: dict | None  # the ``sites`` mapping its options carried (None: no per-site options)
    schedule_keys: frozenset = frozenset()  # the schedule context keys its factory names


@dataclass
class NormScope:
    """Context added to every ``create_norm`` call inside the scope, and the records of what they built."""

    context: dict
    records: list[NormRecord] = field(default_factory=list)


_scopes: contextvars.ContextVar[tuple[NormScope, ...]] = contextvars.ContextVar("normlight_norm_scopes", default=())


@contextlib.contextmanager
def norm_scope(**context: Any) -> Iterator[NormScope]:
    """Offer ``context`` (keys of ``CONTEXT_KEYS``, e.g. ``total_steps``) to every norm built inside; record them.

    Scopes nest (inner values win); an explicit keyword of ``create_norm`` wins over any scope. Example::

        with norm_scope(total_steps=5000, warmup_steps=250) as scope:
            model = normlight.create_model("gpt-tiny", norm="powernorm")
        [r.site for r in scope.records]
    """
    unknown = sorted(set(context) - set(CONTEXT_KEYS))
    if unknown:
        raise PluginOptionError(f"norm_scope got unknown context key(s) {unknown}; context keys are {CONTEXT_KEYS}")
    scope = NormScope({k: v for k, v in context.items() if v is not None})
    token = _scopes.set(_scopes.get() + (scope,))
    try:
        yield scope
    finally:
        _scopes.reset(token)


def site_options(options: dict, site: str | None) -> tuple[dict, dict | None]:
    """``(options for this site, the sites mapping)``: the shared options updated by ``options["sites"][site]``."""
    if SITES_KEY not in options:
        return options, None
    options = dict(options)
    sites = options.pop(SITES_KEY)
    if not isinstance(sites, dict) or not all(isinstance(v, dict) for v in sites.values()):
        raise PluginOptionError(
            f"norm option 'sites' must map site names to option dicts, e.g. {{final: {{alpha_init: 0.2}}}}; "
            f"got {sites!r}"
        )
    return {**options, **sites.get(site, {})}, sites


def check_site_overrides(options: dict | None, records: list[NormRecord], what: str = "norm_kwargs") -> None:
    """Raise if ``options["sites"]`` names a site at which no norm was built from these options."""
    sites = (options or {}).get(SITES_KEY)
    if not sites:
        return
    built = sorted({r.site for r in records if r.site is not None and r.overrides == sites})
    unknown = sorted(set(sites) - set(built))
    if unknown:
        raise PluginOptionError(
            f"{what}.sites names {', '.join(map(repr, unknown))}, but this model builds its norms from {what} "
            f"only at the sites {', '.join(built) or '(none)'}; use one of those"
        )


def probe_norm(module: Any, num_features: int, label: str, layout: str | None = None) -> None:
    """Check a built norm once: an nn.Module whose output has the input's shape and is finite.

    Runs on a deep copy, so running statistics and step counters of ``module`` stay untouched.
    """
    if not isinstance(module, torch.nn.Module):
        raise PluginError(f"{label} returned {type(module).__name__}; a norm factory must return a torch.nn.Module")
    ref = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    if ref is not None and ref.is_meta:
        return  # deferred initialization (e.g. FSDP): nothing to run yet
    shape = (2, num_features, 3, 3) if layout == "channels_first" else (2, 3, num_features)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))  # float32 on the CPU, the global RNG untouched
    if ref is not None:
        x = x.to(ref)  # the norm's own dtype and device
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
    num_heads: int | None = None,
    total_steps: int | None = None,
    warmup_steps: int | None = None,
    device: Any = None,
    dtype: Any = None,
    **options: Any,
):
    """Build a norm module over the last dim (or over dim 1 with ``layout="channels_first"``).

    ``spec`` is a registered name, a class, a callable or a partial. Context keywords (``CONTEXT_KEYS``:
    position, heads, the training schedule in forward calls, ...) are passed only if the factory names them;
    a factory without ``layout`` is wrapped in the channels-first adapter. ``options["sites"]`` holds
    per-site overrides (see :func:`site_options`). ``bias=False`` works for every norm: a factory that does not
    take ``bias`` gets its additive parameters removed after construction (:func:`drop_bias`), as nanoGPT's
    ``bias=False`` has none.
    """

    factory, label = resolve("norms", spec)
    options, overrides = site_options(options, site)
    strip_bias = options.get("bias") is False and not accepts(factory, "bias")
    if strip_bias:
        options = {k: v for k, v in options.items() if k != "bias"}
    scopes = _scopes.get()
    context = {k: v for s in scopes for k, v in s.context.items()}
    explicit = dict(
        layer_idx=layer_idx,
        num_layers=num_layers,
        site=site,
        num_heads=num_heads,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        device=device,
        dtype=dtype,
    )
    context.update({k: v for k, v in explicit.items() if v is not None})
    # only the explicit layout, never a scope's (None: the factory's default; call_with_context passes neither
    # None nor a key the factory does not name)
    context["layout"] = layout
    takes_layout = accepts(factory, "layout")
    module = call_with_context(factory, label, (num_features,), options, context)
    if strip_bias:
        drop_bias(module)
    if layout == "channels_first" and not takes_layout:
        module = ChannelsFirst(module)
    key = (getattr(factory, "func", factory), layout)
    if key not in _probed:
        probe_norm(module, num_features, label, layout)
        _probed.add(key)
    if scopes:
        asked = frozenset(k for k in SCHEDULE_KEYS if accepts(factory, k))
        record = NormRecord(site, module, overrides, asked)
        for s in scopes:
            s.records.append(record)
    return module
