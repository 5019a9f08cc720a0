"""Placement plugin conformance: a Block subclass with a diagram that trains in a tiny GPT and a tiny ViT."""

from __future__ import annotations

import inspect
from typing import Any, Iterable

import torch
from torch import nn

from normlight.blocks.factory import get_placement
from normlight.errors import NormlightError
from normlight.models.factory import create_model
from normlight.testing.common import PLACEMENT_CHECKS, ConformanceError


class _Placement:
    def __init__(self, spec: Any, norm: Any):
        self.spec, self.norm = spec, norm
        try:
            self.cls = get_placement(spec)
        except NormlightError as exc:
            raise ConformanceError(
                f"normlight conformance: placement {spec!r}: {exc}\n  fix: subclass "
                "normlight.blocks.base.Block and override forward"
            ) from exc
        self.label = f"placement {getattr(self.cls, '__module__', '?')}.{self.cls.__qualname__}"

    def fail(self, check: str, problem: str, fix: str) -> None:
        raise ConformanceError(f"{self.label} fails the '{check}' check: {problem}\n  fix: {fix}")

    def model(self, family: str, check: str) -> nn.Module:
        name, shape = {"gpt": ("gpt-nano", dict(depth=2)), "vit": ("vit-tiny", dict(depth=2, dim=32, num_heads=2))}[
            family
        ]
        torch.manual_seed(0)
        try:
            return create_model(name, norm=self.norm, placement=self.cls, **shape)
        except Exception as exc:
            self.fail(
                check,
                f"building {name} (depth 2) with it raised {type(exc).__name__}: {exc}",
                "keep Block's constructor signature and create norms with the base class helpers",
            )


def _check_block_class(p: _Placement) -> None:
    doc = inspect.getdoc(p.cls) or ""
    if p.cls.__doc__ is None or len([ln for ln in doc.splitlines() if ln.strip()]) < 3:
        p.fail(
            "block_class",
            "the class has no docstring drawing its data flow",
            "add a docstring with a small ASCII diagram (x --norm--> attn --+--> ...) of where the norms sit",
        )
    rec = getattr(p.cls, "recommended_defaults", {})
    if not isinstance(rec, dict):
        p.fail("block_class", f"recommended_defaults is {type(rec).__name__}", "make recommended_defaults a dict")
    for hook in ("init_weights", "after_optimizer_step"):
        if hasattr(p.cls, hook) and not callable(getattr(p.cls, hook)):
            p.fail("block_class", f"{hook} is not callable", f"define {hook}(model) as a classmethod or staticmethod")


def _train_step(p: _Placement, model: nn.Module, inputs: torch.Tensor, loss_fn, check: str) -> torch.Tensor:
    out = model(inputs)
    if not torch.isfinite(out).all():
        p.fail(check, "the model's output at init is not finite", "check the block's residual scaling and init")
    loss_fn(out).backward()
    bad = [n for n, q in model.named_parameters() if q.grad is not None and not torch.isfinite(q.grad).all()]
    if bad:
        p.fail(check, f"non-finite gradients in {bad[:3]}", "check the block's residual scaling and init")
    for i, blk in enumerate(model.blocks):
        if not any(q.grad is not None and q.grad.abs().sum() > 0 for q in blk.parameters()):
            p.fail(check, f"block {i} received no gradient", "route the residual stream through the block's sublayers")
    with torch.no_grad():
        for q in model.parameters():
            if q.grad is not None:
                q.sub_(1e-3 * q.grad)
    hook = getattr(p.cls, "after_optimizer_step", None)
    if hook is not None:
        hook(model)
    if not torch.isfinite(model(inputs)).all():
        p.fail(
            check,
            "the output after one SGD step (and after_optimizer_step) is not finite",
            "keep after_optimizer_step consistent with the block's forward",
        )
    return out


def _check_gpt(p: _Placement) -> None:
    model = p.model("gpt", "gpt")
    idx = torch.randint(0, model.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    out = _train_step(p, model, idx, lambda y: y.float().logsumexp(-1).mean(), "gpt")
    if tuple(out.shape) != (2, 8, model.vocab_size):
        p.fail(
            "gpt",
            f"logits have shape {tuple(out.shape)}, expected (2, 8, {model.vocab_size})",
            "a block must map (B, T, D) to (B, T, D)",
        )
    model.eval()
    with torch.no_grad():
        a = model(idx)
        idx2 = idx.clone()
        idx2[:, -1] = (idx2[:, -1] + 1) % model.vocab_size
        b = model(idx2)
    if not torch.allclose(a[:, :-1], b[:, :-1], atol=1e-5):
        p.fail(
            "gpt",
            "changing the last token changed the logits of earlier positions: information leaks from the future",
            "mix positions only through block.attn (which applies the causal mask)",
        )


def _check_vit(p: _Placement) -> None:
    model = p.model("vit", "vit")
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(2, model.in_chans, model.img_size, model.img_size, generator=g)
    out = _train_step(p, model, imgs, lambda y: y.float().logsumexp(-1).mean(), "vit")
    if tuple(out.shape) != (2, model.num_classes):
        p.fail(
            "vit",
            f"logits have shape {tuple(out.shape)}, expected (2, {model.num_classes})",
            "a block must map (B, T, D) to (B, T, D)",
        )


def check_placement_plugin(placement: Any, *, norm: Any = "layernorm", checks: Iterable[str] | None = None) -> None:
    """Run the placement contract checks on ``placement`` (a registered name or a Block subclass).

    Checks (``PLACEMENT_CHECKS``): the class (Block subclass, diagram docstring, hooks), a tiny GPT
    (forward shape, finite output and gradients, every block trains, causal, after_optimizer_step) and
    a tiny ViT. Raises :class:`ConformanceError` naming the check and the fix.
    """
    names = list(checks) if checks is not None else list(PLACEMENT_CHECKS)
    if set(names) - set(PLACEMENT_CHECKS):
        raise ValueError(
            f"unknown placement checks {sorted(set(names) - set(PLACEMENT_CHECKS))}; choose from {list(PLACEMENT_CHECKS)}"
        )
    p = _Placement(placement, norm)
    runners = {"block_class": _check_block_class, "gpt": _check_gpt, "vit": _check_vit}
    for name in PLACEMENT_CHECKS:
        if name in names:
            runners[name](p)
