"""Shared machinery of the pooling, residual, mixer and depth-regularizer conformance checks.

``Subject`` names the plugin under test and raises :class:`ConformanceError` with the check, the problem and
the fix; ``check_roundtrip`` (state_dict through ``torch.save``/``torch.load(weights_only=True)``, deepcopy,
pickle), ``check_grads`` and ``train_one_step`` (a tiny GPT or ViT built with the plugin) are used by every kind.
"""

from __future__ import annotations

import copy
import io
import pickle
from typing import Any, Callable

import torch
from torch import nn

from normlight.models.factory import create_model
from normlight.registry import spec_label
from normlight.testing.common import ConformanceError, close

TINY = {
    "gpt": ("gpt-nano", dict(depth=2, dim=32, num_heads=2, mlp_ratio=2.0, max_seq_len=8, vocab_size=32)),
    "vit": ("vit-tiny", dict(depth=2, dim=32, num_heads=2, mlp_ratio=2.0, img_size=8, patch_size=4, num_classes=3)),
}


class Subject:
    """The plugin under test: ``kind`` (pooling, residual, ...), its spec and options."""

    def __init__(self, kind: str, spec: Any, options: dict | None):
        self.kind, self.spec, self.options = kind, spec, dict(options or {})
        self.label = f"{kind} {spec_label(spec)}"

    def fail(self, check: str, problem: str, fix: str) -> None:
        """Raise the conformance error of ``check``."""
        raise ConformanceError(f"{self.label} fails the '{check}' check: {problem}\n  fix: {fix}")

    def run(self, check: str, fn: Callable[[], Any], what: str, fix: str) -> Any:
        """``fn()``, turning any exception into this check's failure."""
        try:
            return fn()
        except ConformanceError:
            raise
        except Exception as exc:
            self.fail(check, f"{what} raised {type(exc).__name__}: {exc}", fix)


def rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A reproducible standard-normal tensor."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def check_roundtrip(
    s: Subject, build: Callable[[int], nn.Module], forward: Callable[[nn.Module], torch.Tensor]
) -> None:
    """state_dict survives torch.save/load(weights_only=True) into a fresh module; deepcopy and pickle keep outputs."""
    a = build(0)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(rand(*p.shape, seed=5) * 0.1)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = build(1)
    s.run(
        "state_dict",
        lambda: b.load_state_dict(torch.load(buf, weights_only=True)),
        "loading the state_dict of a trained module into a fresh one",
        "keep only tensors in the state_dict, with shapes fixed in __init__",
    )
    want = forward(a.eval())
    if not torch.equal(forward(b.eval()), want):
        s.fail(
            "state_dict", "after load_state_dict the eval output differs", "register all state as parameters/buffers"
        )
    clones = s.run(
        "state_dict",
        lambda: (copy.deepcopy(a), pickle.loads(pickle.dumps(a))),
        "deepcopy/pickle",
        "define the class at module top level; keep no lambdas or open files in attributes",
    )
    if not all(torch.equal(forward(c.eval()), want) for c in clones):
        s.fail("state_dict", "a deepcopy/pickle copy gives a different output", "keep all state in parameters/buffers")


def check_grads(s: Subject, module: nn.Module, inputs: list[torch.Tensor], out: torch.Tensor) -> None:
    """Finite, non-zero input gradients and a finite gradient for every trainable parameter."""
    (out * rand(*out.shape, seed=3)).sum().backward()
    if not any(x.grad is not None and x.grad.abs().sum() > 0 for x in inputs):
        s.fail("gradients", "no input receives a gradient", "keep forward differentiable (no .detach() on the path)")
    if not all(torch.isfinite(x.grad).all() for x in inputs if x.grad is not None):
        s.fail("gradients", "an input gradient is not finite", "guard divisions and powers")
    for name, p in module.named_parameters():
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all()):
            s.fail(
                "gradients",
                f"parameter {name!r} gets no finite gradient",
                "use every trainable parameter in forward (DistributedDataParallel fails on unused ones)",
            )


def train_one_step(s: Subject, family: str, check: str, **model_kwargs: Any) -> nn.Module:
    """Build a tiny GPT/ViT with the plugin, train one SGD step, return it; fail on errors or non-finite values."""
    name, shape = TINY[family]
    torch.manual_seed(0)
    model = s.run(
        check,
        lambda: create_model(name, **shape, **model_kwargs),
        f"building {name}",
        "keep the plugin contract of docs/plugins.md (signature, context keywords, declared attributes)",
    )
    x = torch.randint(0, 32, (2, 8)) if family == "gpt" else rand(2, 3, 8, 8)
    fwd = (lambda: model.embed(x)) if model_kwargs.get("readout") else (lambda: model(x))
    out = s.run(check, fwd, f"a training forward of {name}", "check shapes against the contract")
    if not torch.isfinite(out).all():
        s.fail(check, f"{name}'s output at init is not finite", "check the plugin's init and scaling")
    out.float().pow(2).mean().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        s.fail(check, f"non-finite gradients in {bad[:3]}", "check the plugin's backward (divisions, powers)")
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(1e-2 * p.grad)
    if not torch.isfinite(fwd()).all():
        s.fail(check, f"{name}'s output after one SGD step is not finite", "check the plugin's scaling")
    return model


def check_causal(s: Subject, model: nn.Module, check: str) -> None:
    """Changing the last token of a GPT must not change the logits of earlier positions."""
    model.eval()
    idx = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(0))
    idx2 = idx.clone()
    idx2[:, -1] = (idx2[:, -1] + 1) % 32
    with torch.no_grad():
        a, b = model(idx), model(idx2)
    if not close(a[:, :-1], b[:, :-1], 1e-5):
        s.fail(
            check, "changing the last token changed earlier positions' logits", "mix tokens causally when causal=True"
        )
