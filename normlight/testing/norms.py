"""Norm plugin conformance: ``check_norm_plugin`` runs the contract checks (``NORM_CHECKS``) in order.

Checks: build, shape, dtypes (fp32, bf16, fp16), channels_first, gradients, state_dict, copy (deepcopy +
pickle), context (layer_idx / num_layers / site), train_eval, batch_statistics, and the opt-in
distributed check (2 gloo ranks, see ``normlight.testing.distributed``).
"""

from __future__ import annotations

import copy
import functools
import inspect
import io
import os
import pickle
import tempfile
import warnings
from typing import Any, Iterable

import torch
from torch import nn

from normlight import registry
from normlight.errors import NormlightError
from normlight.norms.factory import create_norm
from normlight.testing.common import (
    _DTYPE_TOL,
    DEFAULT_CONTEXT,
    DEFAULT_DTYPES,
    NORM_CHECKS,
    SITES,
    ConformanceError,
    ConformanceWarning,
    close,
)
from normlight.testing.distributed import load_spec, run_ranks, sync_case


class _Norm:
    """The norm under test: its spec, factory, label, options; builds fresh modules reproducibly."""

    def __init__(self, spec: Any, num_features: int, options: dict | None, context: dict | None = None):
        self.spec, self.num_features, self.options = spec, int(num_features), dict(options or {})
        self.context = dict(DEFAULT_CONTEXT if context is None else context)
        try:
            self.factory, self.label = registry.resolve("norms", spec)
        except NormlightError as exc:
            raise ConformanceError(f"normlight conformance: cannot resolve norm {spec!r}: {exc}") from exc

    def fail(self, check: str, problem: str, fix: str) -> None:
        raise ConformanceError(f"{self.label} fails the '{check}' check: {problem}\n  fix: {fix}")

    def build(self, seed: int = 0, check: str = "build", fix: str | None = None, **context: Any) -> nn.Module:
        context = {**self.context, **context}  # inside a model, create_norm always offers the context
        torch.manual_seed(seed)
        try:
            return create_norm(self.spec, self.num_features, **context, **self.options)
        except Exception as exc:  # the factory's own errors too (a KeyError on an unknown site, ...)
            args = ", ".join(f"{k}={v!r}" for k, v in {**context, **self.options}.items())
            self.fail(
                check,
                f"create_norm({self.spec!r}, {self.num_features}, {args}) raised {type(exc).__name__}: {exc}",
                fix
                or "the factory must accept (num_features, **options) plus the context keywords it names, and "
                "return an nn.Module whose output has the input's shape and is finite",
            )

    def input(self, *shape: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(shape, generator=g) * 2.0 + 0.5).to(dtype)

    @property
    def batch_stats(self) -> bool:
        return bool(getattr(self.build(), "uses_batch_statistics", False))


def _forward(s: _Norm, m: nn.Module, x: torch.Tensor, check: str, **kw: Any) -> torch.Tensor:
    try:
        y = m(x, **kw)
    except Exception as exc:
        low = x.dtype in (torch.bfloat16, torch.float16)
        s.fail(
            check,
            f"forward on an input of shape {tuple(x.shape)}, dtype {x.dtype}, "
            f"{'training' if m.training else 'eval'} mode raised {type(exc).__name__}: {exc}",
            "support low-precision modules and inputs: compute in fp32 (x.float(), weight.float()) and cast "
            "the result back to x.dtype"
            if low
            else "normalize over the last dim for any number of leading dims (batch, then positions)",
        )
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        s.fail(
            check,
            f"for an input of shape {tuple(x.shape)} it returned {got}",
            "forward must return one tensor of the input's shape",
        )
    if y.dtype != x.dtype:
        s.fail(
            check,
            f"for a {x.dtype} input (module in the same dtype) it returned {y.dtype}",
            "cast the result back to x.dtype (compute statistics in fp32 if needed, then .to(x.dtype))",
        )
    if not torch.isfinite(y).all():
        s.fail(
            check,
            f"returned non-finite values for a finite {x.dtype} input of shape {tuple(x.shape)}",
            "guard divisions with eps and compute statistics in fp32 for low-precision inputs",
        )
    return y


def _check_build(s: _Norm) -> None:
    m = s.build()
    if not isinstance(m, nn.Module):
        s.fail("build", f"the factory returned {type(m).__name__}", "return a torch.nn.Module")
    for name, p in m.named_parameters():
        if not p.is_floating_point():
            s.fail("build", f"parameter {name!r} has dtype {p.dtype}", "parameters must be floating point")


def _check_shape(s: _Norm) -> None:
    c = s.num_features
    for train in (True, False):
        m = s.build().train(train)
        try:  # (N, C) has no positions: a group/instance norm may refuse it, but only with a clear ValueError
            m(s.input(4, c))
        except ValueError:
            pass
        except Exception as exc:
            s.fail(
                "shape",
                f"an input of shape (4, {c}) raised {type(exc).__name__}: {exc}",
                "support (N, C) inputs, or refuse them with a ValueError that says which shapes work",
            )
        else:
            _forward(s, m, s.input(4, c), "shape")
        for shape in ((2, 5, c), (2, 3, 4, c)):
            _forward(s, m, s.input(*shape), "shape")
        _forward(s, m, s.input(2, 5, c) * 100 + 30, "shape")  # large offset and scale stay finite


def _check_dtypes(s: _Norm, dtypes: Iterable[torch.dtype]) -> None:
    x = s.input(2, 5, s.num_features)
    ref = s.build()(x).detach()
    for dt in dtypes:
        m = s.build().to(dt)
        xd = x.to(dt).detach().requires_grad_()
        y = _forward(s, m, xd, "dtypes")
        if not close(y, ref, _DTYPE_TOL.get(dt, 1e-2)):
            err = (y.double() - ref.double()).abs().max().item()
            s.fail(
                "dtypes",
                f"in {dt} the output differs from fp32 by up to {err:.3g} (output scale {ref.abs().max().item():.3g})",
                "compute the statistics in fp32 (x.float()) and cast the result back",
            )
        y.float().square().sum().backward()
        bad = [
            n
            for n, p in [("input", xd), *m.named_parameters()]
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
        if bad:
            s.fail(
                "dtypes",
                f"in {dt} the gradient of {', '.join(bad)} is not finite",
                "compute the statistics in fp32 so the backward does not overflow",
            )


_LAYOUT_FIX = (
    "a factory that names `layout` must handle layout='channels_first' (N, C, *spatial) itself and give "
    "the same result as its channels-last path; otherwise drop `layout` and normlight's adapter "
    "handles (N, C, H, W)"
)


def _check_channels_first(s: _Norm) -> None:
    c = s.num_features
    x = s.input(2, c, 3, 4)
    cl = s.build()
    cf = s.build(layout="channels_first", check="channels_first", fix=_LAYOUT_FIX)
    for step in range(2):  # two training steps (running statistics evolve), then eval
        want = _forward(s, cl, x.movedim(1, -1) + step, "channels_first").movedim(-1, 1)
        got = _forward(s, cf, x + step, "channels_first")
        if not close(got, want, 1e-5):
            s.fail(
                "channels_first",
                "create_norm(..., layout='channels_first') on (N, C, H, W) differs from "
                "the norm applied to the channels-last view (N, H, W, C) in training mode",
                _LAYOUT_FIX,
            )
    cl.eval(), cf.eval()
    if not close(
        _forward(s, cf, x, "channels_first"), _forward(s, cl, x.movedim(1, -1), "channels_first").movedim(-1, 1), 1e-5
    ):
        s.fail(
            "channels_first",
            "the channels-first module differs from the channels-last one in eval mode",
            "keep the same running statistics on both paths",
        )


def _check_gradients(s: _Norm) -> None:
    m = s.build().train()
    x = s.input(2, 5, s.num_features).requires_grad_()
    w = s.input(2, 5, s.num_features, seed=7)
    (_forward(s, m, x, "gradients") * w).sum().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or not x.grad.abs().sum() > 0:
        s.fail(
            "gradients",
            "the gradient w.r.t. the input is missing, zero or non-finite",
            "keep forward differentiable (no .detach() / torch.no_grad() on the output path)",
        )
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            s.fail(
                "gradients",
                f"parameter {name!r} received no gradient",
                "use every trainable parameter in forward, register constants as buffers or set "
                "requires_grad=False (DistributedDataParallel fails on unused parameters)",
            )
        if not torch.isfinite(p.grad).all():
            s.fail("gradients", f"the gradient of parameter {name!r} is not finite", "guard divisions with eps")


def _train_steps(s: _Norm, m: nn.Module, steps: int = 3) -> None:
    m.train()
    with torch.no_grad():
        for i in range(steps):
            _forward(s, m, s.input(3, 4, s.num_features, seed=100 + i), "train_eval")


def _check_state_dict(s: _Norm) -> None:
    a = s.build(seed=0)
    _train_steps(s, a)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sd = a.state_dict()
    buf = io.BytesIO()
    try:
        torch.save(sd, buf)
        buf.seek(0)
        sd = torch.load(buf, weights_only=True)
    except Exception as exc:
        s.fail(
            "state_dict",
            f"the state_dict does not survive torch.save/torch.load(weights_only=True): {exc}",
            "keep only tensors in the state_dict (plain Python settings belong in __init__ arguments)",
        )
    b = s.build(seed=1)
    try:
        b.load_state_dict(sd)
    except Exception as exc:
        s.fail(
            "state_dict",
            f"a fresh module cannot load the state_dict of a trained one: {exc}",
            "register every tensor as a parameter or buffer with a fixed shape set in __init__",
        )
    x = s.input(2, 5, s.num_features)
    if not torch.equal(_forward(s, a.eval(), x, "state_dict"), _forward(s, b.eval(), x, "state_dict")):
        s.fail(
            "state_dict",
            "after load_state_dict the eval output differs from the original module's",
            "register all state (running statistics, step counters) with register_buffer, not as plain attributes",
        )


def _check_copy(s: _Norm) -> None:
    m = s.build()
    _train_steps(s, m)
    x = s.input(2, 5, s.num_features)
    want = _forward(s, m.eval(), x, "copy")
    try:
        clones = {"copy.deepcopy": copy.deepcopy(m), "pickle": pickle.loads(pickle.dumps(m))}
    except Exception as exc:
        s.fail(
            "copy",
            f"deepcopy/pickle of the module failed: {type(exc).__name__}: {exc}",
            "define the module class at module top level and keep no lambdas, open files or "
            "local functions in attributes (spawned DataLoader workers, DDP and EMA copy modules)",
        )
    for how, c in clones.items():
        if not torch.equal(_forward(s, c.eval(), x, "copy"), want):
            s.fail(
                "copy", f"the module after {how} gives a different eval output", "keep all state in parameters/buffers"
            )


def _check_context(s: _Norm, sites: Iterable[str]) -> None:
    try:
        params = inspect.signature(s.factory).parameters
    except (TypeError, ValueError):
        return  # no signature: normlight passes no context, nothing to check
    named = [k for k in ("layer_idx", "num_layers", "site") if k in params]
    for k in named:
        p = params[k]
        if p.kind is p.POSITIONAL_ONLY:
            s.fail("context", f"context keyword {k!r} is positional-only", f"make {k} a keyword parameter")
        if p.default is p.empty:
            warnings.warn(
                f"{s.label}: context keyword {k!r} has no default, so the norm cannot be built outside "
                f"a normlight model (e.g. as a timm norm_layer)",
                ConformanceWarning,
                stacklevel=3,
            )
    if not named:
        return
    received: dict = {}

    def spy(*args, **kwargs):
        received.update(kwargs)
        return s.factory(*args, **kwargs)

    spy.__signature__ = inspect.signature(s.factory)
    ctx = {"layer_idx": 2, "num_layers": 4, "site": "mlp_in"}
    torch.manual_seed(0)
    create_norm(spy, s.num_features, **ctx, **s.options)
    missing = [k for k in named if received.get(k) != ctx[k]]
    if missing:
        s.fail(
            "context",
            f"the factory names {missing} but did not receive them from normlight.create_norm",
            "name the context keywords as explicit parameters of the factory (not only via **kwargs)",
        )
    x = s.input(2, 3, s.num_features)
    for layer in (0, 3):
        for site in tuple(sites) if "site" in named else ("mlp_in",):
            m = s.build(layer_idx=layer, num_layers=4, site=site, check="context")
            _forward(s, m, x, "context")


def _check_train_eval(s: _Norm) -> None:
    c = s.num_features
    m = s.build()
    _train_steps(s, m)
    m.eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = s.input(3, 5, c)
    y1, y2 = _forward(s, m, x, "train_eval"), _forward(s, m, x, "train_eval")
    if not torch.equal(y1, y2):
        s.fail("train_eval", "two eval forwards of the same input differ", "eval must be deterministic and stateless")
    changed = [k for k, v in m.state_dict().items() if not torch.equal(v, before[k])]
    if changed:
        s.fail(
            "train_eval", f"an eval forward changed {changed}", "update statistics and counters only when self.training"
        )
    if not close(_forward(s, m, x[:1], "train_eval"), y1[:1], 1e-5):
        s.fail(
            "train_eval",
            "in eval mode the output of one sample depends on the other samples of the batch",
            "in eval normalize with running estimates, never with statistics of the current batch",
        )
    if getattr(m, "uses_batch_statistics", False):
        return
    m = s.build().train()
    _train_steps(s, m, 1)  # a data-dependent init on the first training forward (ActNorm, DyT "auto") is allowed
    x2 = x.clone()
    x2[1:] = s.input(2, 5, c, seed=9)
    ya, yb = _forward(s, copy.deepcopy(m), x, "train_eval"), _forward(s, copy.deepcopy(m), x2, "train_eval")
    if not close(ya[:1], yb[:1], 1e-5):
        s.fail(
            "train_eval",
            "in training mode the output of sample 0 changes when other samples change, so the "
            "norm uses batch statistics, but it does not declare them",
            "set the class attribute uses_batch_statistics = True (normlight then syncs it across ranks and "
            "logs its batch-statistics fluctuation), and expose batch_stat / running_stat",
        )


def _check_batch_statistics(s: _Norm) -> None:
    c = s.num_features
    m = s.build()
    if not getattr(m, "uses_batch_statistics", False):
        return
    inner = m
    _train_steps(s, m, 1)
    for attr in ("batch_stat", "running_stat"):
        t = getattr(inner, attr, None)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (c,) or not torch.isfinite(t).all():
            s.fail(
                "batch_statistics",
                f"after a training forward `{attr}` is "
                f"{tuple(t.shape) if isinstance(t, torch.Tensor) else t!r}, not a finite tensor of shape ({c},)",
                "a batch-statistic norm sets self.batch_stat (detached per-channel statistic it normalized with) "
                "in every training forward and exposes self.running_stat (the estimate used in eval)",
            )
    if inner.batch_stat.requires_grad:
        s.fail("batch_statistics", "batch_stat requires grad", "store batch_stat.detach()")
    try:
        takes_mask = "mask" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        takes_mask = False
    if not takes_mask:
        warnings.warn(
            f"{s.label}: forward has no `mask` parameter, so padding tokens enter its batch statistics "
            "in language models; add forward(x, mask=None)",
            ConformanceWarning,
            stacklevel=3,
        )
        return
    x = s.input(2, 6, c)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    a, b = s.build(seed=0), s.build(seed=0)
    xa, xb = x.clone(), x.clone()
    xa[~mask], xb[~mask] = 1e3, -7.0  # two kinds of padding garbage: neither may reach the statistics
    ya = _forward(s, a, xa, "batch_statistics", mask=mask)[mask]
    yb = _forward(s, b, xb, "batch_statistics", mask=mask)[mask]
    if not close(ya, yb, 1e-4) or not close(a.running_stat, b.running_stat, 1e-5):
        s.fail(
            "batch_statistics",
            "with mask=... the outputs of real tokens (or the running statistics) depend on "
            "the values at padded positions",
            "take every statistic only over positions where mask is True "
            "(mask has shape x.shape[:-1], True = real token); still normalize the padded positions",
        )


def _spec_for_subprocess(s: _Norm) -> str:
    if isinstance(s.spec, str):
        return s.spec
    target = s.spec.func if isinstance(s.spec, functools.partial) else s.spec
    mod, qual = getattr(target, "__module__", None), getattr(target, "__qualname__", "")
    if isinstance(s.spec, functools.partial) or not mod or "<locals>" in qual or mod == "__main__":
        s.fail(
            "distributed",
            f"{s.spec!r} cannot be re-imported in a worker process",
            "pass the registered name (e.g. 'mynorm'), or a factory defined at the top level of an importable module",
        )
    return f"py:{mod}:{qual}"


def _check_distributed(s: _Norm, timeout: float = 180.0) -> None:
    if not s.batch_stats:
        return  # nothing crosses the batch, so nothing needs syncing
    spec, world = _spec_for_subprocess(s), 2
    with tempfile.TemporaryDirectory() as tmp:
        try:
            failed = run_ranks(spec, s.num_features, s.options, s.context, tmp, world, timeout)
            if failed and ("EADDRINUSE" in failed or "address already in use" in failed.lower()):
                # another process took the free port: retry once
                failed = run_ranks(spec, s.num_features, s.options, s.context, tmp, world, timeout)
        except TimeoutError as exc:
            s.fail("distributed", str(exc), "make sure every rank issues the same collectives in the same order")
        if failed:
            s.fail(
                "distributed",
                f"the 2-rank gloo run failed: {failed}",
                "the norm must work under torch.distributed (gloo on CPU)",
            )
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(world)]
    full = sync_case(load_spec(spec), s.num_features, s.options, s.context, 0, 1)
    fix = (
        "when torch.distributed is initialized with world_size > 1 and the module is training, all-reduce the "
        "per-channel sums and counts with a differentiable all-reduce (see docs/plugins.md, 'Batch statistics')"
    )
    for key in ("y", "xgrad"):
        if not close(torch.cat([r[key] for r in ranks]), full[key], 1e-5):
            what = "outputs" if key == "y" else "input gradients"
            s.fail(
                "distributed", f"2 ranks on half batches give different {what} than one process on the full batch", fix
            )
    for n, g in full["grads"].items():
        if not close(sum(r["grads"][n] for r in ranks), g, 1e-5):
            s.fail(
                "distributed", f"the summed rank gradients of parameter {n!r} differ from the full-batch gradient", fix
            )
    for n, b in full["buffers"].items():
        if not all(close(r["buffers"][n], b, 1e-5) for r in ranks):
            s.fail(
                "distributed",
                f"buffer {n!r} after one step differs from the full-batch run on some rank",
                fix + ", and update running estimates from the synced statistics",
            )


def check_norm_plugin(
    norm: Any,
    num_features: int = 64,
    *,
    options: dict | None = None,
    context: dict | None = None,
    checks: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    dtypes: Iterable[torch.dtype] = DEFAULT_DTYPES,
    sites: Iterable[str] = SITES,
    distributed: bool = False,
) -> None:
    """Run the norm contract checks on ``norm`` (a registered name, a class, a factory or a partial).

    Raises :class:`ConformanceError` (an ``AssertionError``) at the first violation, naming the check,
    what went wrong and how to fix it. ``options`` are the norm_kwargs to build with; ``context`` the
    context keywords offered at every build (default ``DEFAULT_CONTEXT``, as in a model); ``checks`` selects
    checks by name (default: all of ``NORM_CHECKS`` except ``distributed`` unless ``distributed=True``);
    ``skip`` removes some; ``sites`` limits the sites tried when the factory takes ``site``.
    """
    names = list(checks) if checks is not None else [c for c in NORM_CHECKS if c != "distributed" or distributed]
    unknown = sorted(set(names) - set(NORM_CHECKS)) + sorted(set(skip) - set(NORM_CHECKS))
    if unknown:
        raise ValueError(f"unknown conformance checks {unknown}; choose from {list(NORM_CHECKS)}")
    s = _Norm(norm, num_features, options, context)
    runners = {
        "build": lambda: _check_build(s),
        "shape": lambda: _check_shape(s),
        "dtypes": lambda: _check_dtypes(s, dtypes),
        "channels_first": lambda: _check_channels_first(s),
        "gradients": lambda: _check_gradients(s),
        "state_dict": lambda: _check_state_dict(s),
        "copy": lambda: _check_copy(s),
        "context": lambda: _check_context(s, sites),
        "train_eval": lambda: _check_train_eval(s),
        "batch_statistics": lambda: _check_batch_statistics(s),
        "distributed": lambda: _check_distributed(s),
    }
    for name in NORM_CHECKS:  # always in contract order: later checks rely on earlier ones
        if name in names and name not in skip:
            runners[name]()
