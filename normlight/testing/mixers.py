"""Token-mixer plugin conformance: ``check_mixer_plugin`` runs ``MIXER_CHECKS`` in order.

build, shape ((B, T, D) -> (B, T, D) on square token grids, with and without ``pos``), causal (a mixer that
runs in causal models must not leak later tokens), gradients, state_dict (+ deepcopy/pickle), model (trains one
step in a tiny ViT with mean pooling and, if causal-capable, in a tiny GPT).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from normlight.errors import NormlightError
from normlight.mixers.factory import check_mixer, create_mixer
from normlight.testing.common import MIXER_CHECKS, close
from normlight.testing.kinds import Subject, check_causal, check_grads, check_roundtrip, rand, train_one_step

DIM = 16


def _causal_ok(s: Subject) -> bool:
    try:
        check_mixer(s.spec, causal=True, where="a causal model")
        return True
    except NormlightError:
        return False


def _build(s: Subject, seed: int = 0, causal: bool = False):
    torch.manual_seed(seed)
    return s.run(
        "build",
        lambda: create_mixer(s.spec, DIM, num_heads=2, causal=causal, **s.options),
        "create_mixer",
        "accept (dim, **options); take `causal` or declare supports_causal",
    )


def _check_build(s: Subject) -> None:
    if not isinstance(_build(s), torch.nn.Module):
        s.fail("build", "the factory did not return an nn.Module", "return a torch.nn.Module")


def _check_shape(s: Subject) -> None:
    m = _build(s)
    for t in (4, 16):
        for pos in (None, rand(1, t, DIM, seed=2)):
            y = s.run(
                "shape", lambda: m(rand(2, t, DIM), pos), f"mixing (2, {t}, {DIM})", "accept forward(x, pos=None)"
            )
            if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, t, DIM) or not torch.isfinite(y).all():
                s.fail("shape", f"(2, {t}, {DIM}) tokens did not give a finite tensor of that shape", "keep the shape")


def _check_causal(s: Subject) -> None:
    if not _causal_ok(s):
        return
    m = _build(s, causal=True).eval()
    x = rand(2, 9, DIM)
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        if not close(m(x)[:, :-1], m(x2)[:, :-1], 1e-5):
            s.fail("causal", "with causal=True a later token changed earlier outputs", "mask future tokens")


def _check_gradients(s: Subject) -> None:
    m = _build(s).train()
    x = rand(2, 4, DIM).requires_grad_()
    check_grads(s, m, [x], m(x))


def _check_state_dict(s: Subject) -> None:
    x = rand(2, 4, DIM)
    check_roundtrip(s, lambda seed: _build(s, seed), lambda m: m(x))


def _check_model(s: Subject) -> None:
    train_one_step(s, "vit", "model", mixer=s.spec, mixer_kwargs=s.options, pool="mean")
    if _causal_ok(s):
        check_causal(s, train_one_step(s, "gpt", "model", mixer=s.spec, mixer_kwargs=s.options), "model")


def check_mixer_plugin(mixer: Any, *, options: dict | None = None, checks: Iterable[str] | None = None) -> None:
    """Run the mixer contract checks on ``mixer`` (a registered name, class or factory); raise
    :class:`ConformanceError` at the first violation, naming the check and the fix."""
    names = list(checks) if checks is not None else list(MIXER_CHECKS)
    if set(names) - set(MIXER_CHECKS):
        raise ValueError(f"unknown mixer checks {sorted(set(names) - set(MIXER_CHECKS))}; choose from {MIXER_CHECKS}")
    s = Subject("mixer", mixer, options)
    for name in MIXER_CHECKS:
        if name in names:
            globals()[f"_check_{name}"](s)
