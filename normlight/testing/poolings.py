"""Pooling plugin conformance: ``check_pooling_plugin`` runs ``POOLING_CHECKS`` in order.

build (an nn.Module with valid declarations), shape ((B, T, D) -> (B, D) for several T), dtypes (bf16 close to
fp32), gradients, state_dict (+ deepcopy/pickle), batch_independence (a sample's vector ignores the others), model
(trains one step as a tiny ViT's ``pool`` and, unless it reads a class token, as a tiny GPT's ``readout``).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from normlight.poolings.base import NORM_POSITIONS
from normlight.poolings.factory import create_pooling
from normlight.testing.common import POOLING_CHECKS, close
from normlight.testing.kinds import Subject, check_grads, check_roundtrip, rand, train_one_step

DIM, LAYERS = 16, 2


def _build(s: Subject, seed: int = 0):
    torch.manual_seed(seed)
    return s.run(
        "build",
        lambda: create_pooling(s.spec, DIM, num_heads=2, num_layers=LAYERS, **s.options),
        "create_pooling",
        "accept (dim, **options) and name context keywords (num_heads, num_layers) as parameters",
    )


def _call(m, x: torch.Tensor) -> torch.Tensor:
    if getattr(m, "needs_hidden_states", False):
        return m(x, hidden_states=[x * (i + 1) for i in range(LAYERS)])
    return m(x)


def _check_build(s: Subject) -> None:
    m = _build(s)
    if not isinstance(m, torch.nn.Module):
        s.fail("build", f"the factory returned {type(m).__name__}", "return a torch.nn.Module")
    if getattr(m, "norm_position", "pre") not in NORM_POSITIONS:
        s.fail("build", f"norm_position is {m.norm_position!r}", f"declare norm_position as one of {NORM_POSITIONS}")
    for attr in ("uses_class_token", "needs_hidden_states"):
        if not isinstance(getattr(m, attr, False), bool):
            s.fail("build", f"{attr} is not a bool", f"declare {attr} = True/False as a class attribute")


def _check_shape(s: Subject) -> None:
    m = _build(s)
    for t in (1, 5, 9):
        y = s.run("shape", lambda: _call(m, rand(3, t, DIM)), f"pooling (3, {t}, {DIM}) tokens", "accept any T")
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (3, DIM) or not torch.isfinite(y).all():
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            s.fail("shape", f"(3, {t}, {DIM}) tokens gave {got}", f"return a finite (batch, dim) = (3, {DIM}) tensor")


def _check_dtypes(s: Subject) -> None:
    m = _build(s)
    x = rand(2, 5, DIM)
    want = _call(m, x)
    got = s.run("dtypes", lambda: _call(m.to(torch.bfloat16), x.bfloat16()), "a bf16 forward", "compute in fp32 inside")
    if got.dtype != torch.bfloat16 or not close(got.float(), want, 6e-2):
        s.fail("dtypes", "bf16 output is not bf16 or far from fp32", "cast statistics to fp32 and the result back")


def _check_gradients(s: Subject) -> None:
    m = _build(s).train()
    x = rand(2, 5, DIM).abs().add(0.1).requires_grad_()  # positive tokens: GeM-like poolings pass gradients
    check_grads(s, m, [x], _call(m, x))


def _check_state_dict(s: Subject) -> None:
    x = rand(2, 5, DIM)
    check_roundtrip(s, lambda seed: _build(s, seed), lambda m: _call(m, x))


def _check_batch_independence(s: Subject) -> None:
    m = _build(s).eval()
    x = rand(3, 5, DIM)
    x2 = x.clone()
    x2[1:] = rand(2, 5, DIM, seed=9)
    if not close(_call(m, x)[:1], _call(m, x2)[:1], 1e-5):
        s.fail("batch_independence", "sample 0's vector changes with the other samples", "pool each sample on its own")


def _check_model(s: Subject) -> None:
    train_one_step(s, "vit", "model", pool=s.spec, pool_kwargs=s.options)
    if not getattr(_build(s), "uses_class_token", False):
        train_one_step(s, "gpt", "model", readout=s.spec, readout_kwargs=s.options)


def check_pooling_plugin(pooling: Any, *, options: dict | None = None, checks: Iterable[str] | None = None) -> None:
    """Run the pooling contract checks on ``pooling`` (a registered name, class or factory); raise
    :class:`ConformanceError` at the first violation, naming the check and the fix."""
    names = list(checks) if checks is not None else list(POOLING_CHECKS)
    if set(names) - set(POOLING_CHECKS):
        raise ValueError(
            f"unknown pooling checks {sorted(set(names) - set(POOLING_CHECKS))}; choose from {POOLING_CHECKS}"
        )
    s = Subject("pooling", pooling, options)
    for name in POOLING_CHECKS:
        if name in names:
            globals()[f"_check_{name}"](s)
