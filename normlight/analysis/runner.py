"""Finding and running analyses: the built-ins and plugins, all through the entry-point group ``normlight.analyses``.

An analysis plugin is a callable ``analysis(ctx, **options) -> AnalysisResult`` registered like a norm::

    [project.entry-points."normlight.analyses"]
    my_probe = "my_pkg.probe:run"

``ctx`` is an :class:`~normlight.analysis.context.AnalysisContext` (layer view, evaluation batches, hidden-state
cache, plan evaluation, healing); options come from the user (``--options``) and are checked against the
callable's signature, so a typo is a clear error naming the analysis and its valid options.
"""

from __future__ import annotations

import difflib
import inspect

from normlight import registry
from normlight.analysis.context import AnalysisContext
from normlight.analysis.result import AnalysisResult
from normlight.errors import PluginError, PluginOptionError, UnknownNameError

KIND = "analyses"
# run order of the built-ins: the cheap cache-only ones first, the plan-evaluating ones last
DEFAULT = (
    "block_influence",
    "angular_distance",
    "logit_lens",
    "representations",
    "norm_stats",
    "painters",
    "removal_curve",
)


def list_analyses() -> list[str]:
    """Registered analysis names (built-in and plugins), without importing plugin code."""
    return registry.list_names(KIND)


def get_analysis(name: str):
    """The analysis callable and a label naming its distribution; a clear error for an unknown name."""
    try:
        return registry.resolve(KIND, name)
    except UnknownNameError:
        names = list_analyses()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"unknown analysis {name!r}.{hint} Available analyses: {', '.join(names)}") from None


def resolve_names(names: list[str] | str | None) -> list[str]:
    """``None`` or ``"all"``: the built-ins in their run order plus every plugin analysis; else as given."""
    if names is None or names == "all" or names == ["all"]:
        extra = [n for n in list_analyses() if n not in DEFAULT]
        return [n for n in DEFAULT if n in list_analyses()] + extra
    return [names] if isinstance(names, str) else list(names)


def check(names: list[str], options: dict[str, dict] | None = None) -> list[tuple]:
    """Resolve every analysis and check its options (cheap: nothing runs); ``(name, callable, label, options)``."""
    options = dict(options or {})
    unused = sorted(set(options) - set(names))
    if unused:
        raise PluginOptionError(f"options given for analyses that are not selected: {unused}; selected: {names}")
    todo = []
    for name in names:
        fn, label = get_analysis(name)
        opts = options.get(name) or {}
        if not isinstance(opts, dict):
            raise PluginOptionError(f"options of analysis {name!r} must be a mapping, got {opts!r}")
        _check_options(fn, label, opts)
        todo.append((name, fn, label, opts))
    return todo


def run_analyses(
    ctx: AnalysisContext, names: list[str], options: dict[str, dict] | None = None
) -> list[AnalysisResult]:
    """Run the analyses ``names`` on ``ctx`` with per-analysis ``options``; every name and option is checked
    before the first analysis runs."""
    results = []
    for name, fn, label, opts in check(names, options):
        res = registry.call_with_context(fn, label, (ctx,), opts, {})
        if not isinstance(res, AnalysisResult):
            raise PluginError(f"{label} returned {type(res).__name__}, not an AnalysisResult")
        results.append(res)
    return results


def _check_options(fn, label: str, opts: dict) -> None:
    """Options must be keyword parameters of ``fn`` after ``ctx`` (unless it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n in list(params)[1:] if params[n].kind in (params[n].POSITIONAL_OR_KEYWORD, params[n].KEYWORD_ONLY)]
    bad = sorted(set(opts) - set(valid))
    if bad:
        raise PluginOptionError(
            f"{label} does not accept option(s) {bad}; valid options: {', '.join(valid) or '(none)'}"
        )
