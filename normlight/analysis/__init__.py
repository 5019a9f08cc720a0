"""Post-hoc layer analysis of trained models (``normlight analyze``): redundancy, removable depth and per-layer
representations. One module per analysis, each citing its paper and formula:

block_influence.py   1 - cos(h_in, h_out) per block and per attention / MLP sub-layer (ShortGPT)
angular_distance.py  arccos(cos(h_l, h_{l+n}))/pi for every l, n; the best contiguous block to drop (Gromov et al.)
removal_curve.py     val loss / accuracy vs layers removed by BI, angular distance, random, sub-layers (FinerCut),
                     optionally healed by a short fine-tune
painters.py          skip / swap / repeat / parallel / reverse layers: Δ val metric (Transformer Layers as Painters)
logit_lens.py        loss read out after every layer through the final norm and head (LayerSkip)
representations.py   effective rank, prompt entropy, residual RMS, massive activations, dormant units, attention entropy
norm_stats.py        learned gains / biases, running statistics, train-vs-eval gap of batch-statistic norms

The machinery: ``layers.py`` (the model as embed -> blocks -> readout, one adapter per family), ``context.py``
(hidden-state cache, layer plans, evaluation, healing), ``result.py`` (what an analysis returns), ``runner.py``
(the ``normlight.analyses`` entry-point group), ``report.py`` (tables, plots), ``source.py`` (checkpoints,
configs, data). Python API::

    from normlight.analysis import analyze
    results = analyze(model, batches)                       # any model with an adapter (model.family)
    results = analyze(model, batches, ["removal_curve"], {"removal_curve": {"scores": ["bi", "random"]}})
"""

from __future__ import annotations

from typing import Callable, Iterator

from torch import nn

from normlight.analysis.context import AnalysisContext, Eval, Plan
from normlight.analysis.layers import AnalysisInputError, LayerModel, as_layer_model, register_family
from normlight.analysis.report import write_report
from normlight.analysis.result import AnalysisResult, Matrix, Series
from normlight.analysis.runner import get_analysis, list_analyses, resolve_names, run_analyses


def analyze(
    model: nn.Module | LayerModel,
    batches: list,
    analyses: list[str] | str | None = None,
    options: dict[str, dict] | None = None,
    *,
    family: str | None = None,
    train_batches: Callable[[], Iterator] | None = None,
    seed: int = 0,
) -> dict[str, AnalysisResult]:
    """Run layer analyses on ``model`` over the evaluation ``batches`` (a list of ``(inputs, targets)``).

    Args:
        model: a model whose family has an adapter (``gpt``, ``vit``, or one added with :func:`register_family`),
            or a :class:`LayerModel` built for any other module.
        analyses: names (default: every registered analysis, built-ins first).
        options: per-analysis keyword options, e.g. ``{"removal_curve": {"heal_steps": 20}}``.
        family: the family, when the model has no ``family`` attribute.
        train_batches: a callable returning a fresh iterator of training batches (needed for healing).
        seed: seed of random removal orders and healing runs.
    Returns:
        ``{name: AnalysisResult}`` in run order.
    """
    ctx = AnalysisContext(as_layer_model(model, family), batches, train_batches, seed)
    return {r.name: r for r in run_analyses(ctx, resolve_names(analyses), options)}


__all__ = [
    "AnalysisContext",
    "AnalysisInputError",
    "AnalysisResult",
    "Eval",
    "LayerModel",
    "Matrix",
    "Plan",
    "Series",
    "analyze",
    "as_layer_model",
    "get_analysis",
    "list_analyses",
    "register_family",
    "resolve_names",
    "run_analyses",
    "write_report",
]
