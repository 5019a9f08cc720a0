"""Depth-regularizer plugin conformance: ``check_depth_regularizer_plugin`` runs ``DEPTH_REGULARIZER_CHECKS``.

build (one module per layer), train_eval (finite outputs of x's shape; eval is deterministic), rates
(``drop_rate`` in [0, 1] and ``exit_weight`` >= 0 where exposed), model (trains one step in a tiny GPT, stays
causal, and in a tiny ViT; deterministic in eval).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from normlight.depth.factory import create_depth_regularizer
from normlight.testing.common import DEPTH_REGULARIZER_CHECKS
from normlight.testing.kinds import Subject, check_causal, rand, train_one_step

LAYERS = 4


def _build(s: Subject, layer: int):
    return s.run(
        "build",
        lambda: create_depth_regularizer(s.spec, layer_idx=layer, num_layers=LAYERS, **s.options),
        f"create_depth_regularizer (layer {layer})",
        "accept **options and name layer_idx / num_layers as parameters",
    )


def _check_build(s: Subject) -> None:
    for layer in range(LAYERS):
        if not isinstance(_build(s, layer), torch.nn.Module):
            s.fail("build", "the factory did not return an nn.Module", "return a torch.nn.Module")


def _check_train_eval(s: Subject) -> None:
    x, h = rand(8, 3, 4), rand(8, 3, 4, seed=1)
    for layer in range(LAYERS):
        m = _build(s, layer)
        y = s.run("train_eval", lambda: m.train()(x, h), "a training call", "return the next block's input")
        if tuple(y.shape) != tuple(x.shape) or not torch.isfinite(y).all():
            s.fail("train_eval", "a training call did not return a finite tensor of x's shape", "keep the shape")
        m.eval()
        if not torch.equal(m(x, h), m(x, h)):
            s.fail("train_eval", "two eval calls differ", "draw random numbers only when self.training")


def _check_rates(s: Subject) -> None:
    for layer in range(LAYERS):
        m = _build(s, layer)
        rate, w = getattr(m, "drop_rate", 0.0), getattr(m, "exit_weight", 0.0)
        if not 0.0 <= float(rate) <= 1.0 or float(w) < 0.0:
            s.fail(
                "rates",
                f"layer {layer}: drop_rate={rate}, exit_weight={w}",
                "keep drop_rate in [0, 1], exit_weight >= 0",
            )


def _check_model(s: Subject) -> None:
    kw = dict(depth_regularizer=s.spec, depth_regularizer_kwargs=s.options)
    check_causal(s, train_one_step(s, "gpt", "model", **kw), "model")
    vit = train_one_step(s, "vit", "model", **kw).eval()
    img = rand(2, 3, 8, 8)
    with torch.no_grad():
        if not torch.equal(vit(img), vit(img)):
            s.fail("model", "the ViT in eval mode is not deterministic", "act only when self.training")


def check_depth_regularizer_plugin(
    regularizer: Any, *, options: dict | None = None, checks: Iterable[str] | None = None
) -> None:
    """Run the depth-regularizer contract checks on ``regularizer`` (a registered name, class or factory); raise
    :class:`ConformanceError` at the first violation, naming the check and the fix."""
    names = list(checks) if checks is not None else list(DEPTH_REGULARIZER_CHECKS)
    if set(names) - set(DEPTH_REGULARIZER_CHECKS):
        bad = sorted(set(names) - set(DEPTH_REGULARIZER_CHECKS))
        raise ValueError(f"unknown depth-regularizer checks {bad}; choose from {DEPTH_REGULARIZER_CHECKS}")
    s = Subject("depth regularizer", regularizer, options)
    for name in DEPTH_REGULARIZER_CHECKS:
        if name in names:
            globals()[f"_check_{name}"](s)
