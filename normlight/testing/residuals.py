"""Residual plugin conformance: ``check_residual_plugin`` runs ``RESIDUAL_CHECKS`` in order.

build (declared sites are valid, one module per site and layer), shape (each declared site keeps its shape),
gradients, state_dict (+ deepcopy/pickle), model (trains one step in a tiny GPT with Pre-LN and Post-LN,
stays causal, and in a tiny ViT).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from normlight.residuals.base import BRANCH_SITES
from normlight.residuals.factory import create_residual, declared_sites
from normlight.testing.common import RESIDUAL_CHECKS
from normlight.testing.kinds import Subject, check_causal, check_grads, check_roundtrip, rand, train_one_step

DIM, LAYERS, HEADS = 16, 3, 2


def _sites(s: Subject) -> tuple:
    return s.run(
        "build", lambda: declared_sites(s.spec), "reading `sites`", "declare sites from attn, mlp, depth, value"
    )


def _build(s: Subject, site: str, layer: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return s.run(
        "build",
        lambda: create_residual(
            s.spec, DIM, site=site, layer_idx=layer, num_layers=LAYERS, num_heads=HEADS, **s.options
        ),
        f"create_residual at site {site!r}",
        "accept (dim, **options) and name the context keywords you need (site, layer_idx, num_layers)",
    )


def _inputs(site: str, layer: int = 1) -> tuple:
    if site in BRANCH_SITES:
        return rand(2, 4, DIM), rand(2, 4, DIM, seed=1)
    return ([rand(2, 4, DIM, seed=j) for j in range(layer + 2)],)


def _check_build(s: Subject) -> None:
    for site in _sites(s):
        for layer in range(LAYERS):
            if not isinstance(_build(s, site, layer), torch.nn.Module):
                s.fail("build", f"site {site!r} did not give an nn.Module", "return a torch.nn.Module per site")


def _check_shape(s: Subject) -> None:
    for site in [x for x in _sites(s) if x != "value"]:  # value residuals are exercised inside attention (model)
        y = s.run(
            "shape", lambda: _build(s, site)(*_inputs(site)), f"a forward at site {site!r}", "see docs/plugins.md"
        )
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, 4, DIM) or not torch.isfinite(y).all():
            s.fail("shape", f"site {site!r} did not return a finite (2, 4, {DIM}) stream", "keep the stream's shape")


def _check_gradients(s: Subject) -> None:
    for site in [x for x in _sites(s) if x != "value"]:
        m = _build(s, site).train()
        args = _inputs(site)
        leaves = [t.requires_grad_() for t in (args if site in BRANCH_SITES else args[0])]
        check_grads(s, m, leaves, m(*args))


def _check_state_dict(s: Subject) -> None:
    for site in [x for x in _sites(s) if x != "value"]:
        args = _inputs(site)
        check_roundtrip(s, lambda seed: _build(s, site, seed=seed), lambda m: m(*args))


def _check_model(s: Subject) -> None:
    for placement in ("pre", "post"):
        gpt = train_one_step(s, "gpt", "model", residual=s.spec, residual_kwargs=s.options, placement=placement)
        check_causal(s, gpt, "model")
    train_one_step(s, "vit", "model", residual=s.spec, residual_kwargs=s.options)


def check_residual_plugin(residual: Any, *, options: dict | None = None, checks: Iterable[str] | None = None) -> None:
    """Run the residual contract checks on ``residual`` (a registered name, class or factory); raise
    :class:`ConformanceError` at the first violation, naming the check and the fix."""
    names = list(checks) if checks is not None else list(RESIDUAL_CHECKS)
    if set(names) - set(RESIDUAL_CHECKS):
        raise ValueError(
            f"unknown residual checks {sorted(set(names) - set(RESIDUAL_CHECKS))}; choose from {RESIDUAL_CHECKS}"
        )
    s = Subject("residual", residual, options)
    for name in RESIDUAL_CHECKS:
        if name in names:
            globals()[f"_check_{name}"](s)
