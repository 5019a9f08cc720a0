"""Conformance kit: check that a norm or placement plugin keeps normlight's plugin contract.

A plugin author calls it from their own tests, either as a function::

    from normlight.testing import check_norm_plugin
    check_norm_plugin("mynorm", num_features=16)           # raises ConformanceError saying what to fix

or as a pytest base class (one test per contract check)::

    from normlight.testing import NormPluginConformance

    class TestMyNorm(NormPluginConformance):
        norm = "mynorm"              # a registered name, or the factory itself
        options = {"eps": 1e-6}      # norm_kwargs to build with
        distributed = True           # also run the 2-rank gloo sync check (batch-statistic norms)

Norm checks, in order (``NORM_CHECKS``): build, shape, dtypes (fp32, bf16, fp16), channels_first,
gradients, state_dict, copy (deepcopy + pickle), context (layer_idx / num_layers / site), train_eval,
batch_statistics, and the opt-in distributed check. Placement checks: a Block subclass with a diagram
docstring that trains in a tiny GPT (causal, finite) and a tiny ViT. See docs/plugins.md.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import warnings
from typing import Any, Iterable

import torch
from torch import nn

import normlight
from normlight import registry
from normlight.errors import NormlightError

SITES = ("attn_in", "attn_out", "mlp_in", "mlp_mid", "mlp_out", "final", "qk", "embed",
         "patch_pre", "patch_post", "pos", "conv")
NORM_CHECKS = ("build", "shape", "dtypes", "channels_first", "gradients", "state_dict", "copy", "context",
               "train_eval", "batch_statistics", "distributed")
PLACEMENT_CHECKS = ("block_class", "gpt", "vit")
DEFAULT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# what a model offers a mid-stack norm; a factory gets each keyword only if its signature names it
DEFAULT_CONTEXT = {"layer_idx": 1, "num_layers": 4, "site": "mlp_in"}
# max |y_low - y_fp32| allowed, relative to 1 + max |y_fp32|: a few ulps of the low-precision output
_DTYPE_TOL = {torch.float32: 1e-5, torch.float64: 1e-7, torch.bfloat16: 6e-2, torch.float16: 1e-2}


class ConformanceError(AssertionError):
    """A plugin breaks the normlight plugin contract; the message names the check and how to fix it."""


class ConformanceWarning(UserWarning):
    """A plugin keeps the contract but misses an optional part that normlight would use."""


# ------------------------------------------------------------------------------------------------
# norm plugins
# ------------------------------------------------------------------------------------------------
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
            return normlight.create_norm(self.spec, self.num_features, **context, **self.options)
        except Exception as exc:  # the factory's own errors too (a KeyError on an unknown site, ...)
            args = ", ".join(f"{k}={v!r}" for k, v in {**context, **self.options}.items())
            self.fail(check, f"normlight.create_norm({self.spec!r}, {self.num_features}, {args}) raised "
                      f"{type(exc).__name__}: {exc}", fix or
                      "the factory must accept (num_features, **options) plus the context keywords it names, and "
                      "return an nn.Module whose output has the input's shape and is finite")

    def input(self, *shape: int, seed: int = 1, dtype=torch.float32) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(shape, generator=g) * 2.0 + 0.5).to(dtype)

    @property
    def batch_stats(self) -> bool:
        return bool(getattr(self.build(), "uses_batch_statistics", False))


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """max |a - b| <= tol * (1 + max |b|): relative to the output's scale, absolute near zero."""
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return False
    return a.numel() == 0 or bool((a - b).abs().max() <= tol * (1 + b.abs().max()))


def _forward(s: _Norm, m: nn.Module, x: torch.Tensor, check: str, **kw: Any) -> torch.Tensor:
    try:
        y = m(x, **kw)
    except Exception as exc:
        low = x.dtype in (torch.bfloat16, torch.float16)
        s.fail(check, f"forward on an input of shape {tuple(x.shape)}, dtype {x.dtype}, "
               f"{'training' if m.training else 'eval'} mode raised {type(exc).__name__}: {exc}",
               "support low-precision modules and inputs: compute in fp32 (x.float(), weight.float()) and cast "
               "the result back to x.dtype" if low else
               "normalize over the last dim for any number of leading dims (batch, then positions)")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        s.fail(check, f"for an input of shape {tuple(x.shape)} it returned {got}",
               "forward must return one tensor of the input's shape")
    if y.dtype != x.dtype:
        s.fail(check, f"for a {x.dtype} input (module in the same dtype) it returned {y.dtype}",
               "cast the result back to x.dtype (compute statistics in fp32 if needed, then .to(x.dtype))")
    if not torch.isfinite(y).all():
        s.fail(check, f"returned non-finite values for a finite {x.dtype} input of shape {tuple(x.shape)}",
               "guard divisions with eps and compute statistics in fp32 for low-precision inputs")
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
            s.fail("shape", f"an input of shape (4, {c}) raised {type(exc).__name__}: {exc}",
                   "support (N, C) inputs, or refuse them with a ValueError that says which shapes work")
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
        if not _close(y, ref, _DTYPE_TOL.get(dt, 1e-2)):
            err = (y.double() - ref.double()).abs().max().item()
            s.fail("dtypes", f"in {dt} the output differs from fp32 by up to {err:.3g} (output scale "
                   f"{ref.abs().max().item():.3g})", "compute the statistics in fp32 (x.float()) and cast the result back")
        y.float().square().sum().backward()
        bad = [n for n, p in [("input", xd), *m.named_parameters()] if p.grad is not None and not torch.isfinite(p.grad).all()]
        if bad:
            s.fail("dtypes", f"in {dt} the gradient of {', '.join(bad)} is not finite",
                   "compute the statistics in fp32 so the backward does not overflow")


_LAYOUT_FIX = ("a factory that names `layout` must handle layout='channels_first' (N, C, *spatial) itself and give "
               "the same result as its channels-last path; otherwise drop `layout` and normlight's adapter "
               "handles (N, C, H, W)")


def _check_channels_first(s: _Norm) -> None:
    c = s.num_features
    x = s.input(2, c, 3, 4)
    cl = s.build()
    cf = s.build(layout="channels_first", check="channels_first", fix=_LAYOUT_FIX)
    for step in range(2):  # two training steps (running statistics evolve), then eval
        want = _forward(s, cl, x.movedim(1, -1) + step, "channels_first").movedim(-1, 1)
        got = _forward(s, cf, x + step, "channels_first")
        if not _close(got, want, 1e-5):
            s.fail("channels_first", "normlight.create_norm(..., layout='channels_first') on (N, C, H, W) differs from "
                   "the norm applied to the channels-last view (N, H, W, C) in training mode",
                   _LAYOUT_FIX)
    cl.eval(), cf.eval()
    if not _close(_forward(s, cf, x, "channels_first"), _forward(s, cl, x.movedim(1, -1), "channels_first").movedim(-1, 1), 1e-5):
        s.fail("channels_first", "the channels-first module differs from the channels-last one in eval mode",
               "keep the same running statistics on both paths")


def _check_gradients(s: _Norm) -> None:
    m = s.build().train()
    x = s.input(2, 5, s.num_features).requires_grad_()
    w = s.input(2, 5, s.num_features, seed=7)
    (_forward(s, m, x, "gradients") * w).sum().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or not x.grad.abs().sum() > 0:
        s.fail("gradients", "the gradient w.r.t. the input is missing, zero or non-finite",
               "keep forward differentiable (no .detach() / torch.no_grad() on the output path)")
    for name, p in m.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            s.fail("gradients", f"parameter {name!r} received no gradient",
                   "use every trainable parameter in forward, register constants as buffers or set "
                   "requires_grad=False (DistributedDataParallel fails on unused parameters)")
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
        s.fail("state_dict", f"the state_dict does not survive torch.save/torch.load(weights_only=True): {exc}",
               "keep only tensors in the state_dict (plain Python settings belong in __init__ arguments)")
    b = s.build(seed=1)
    try:
        b.load_state_dict(sd)
    except Exception as exc:
        s.fail("state_dict", f"a fresh module cannot load the state_dict of a trained one: {exc}",
               "register every tensor as a parameter or buffer with a fixed shape set in __init__")
    x = s.input(2, 5, s.num_features)
    if not torch.equal(_forward(s, a.eval(), x, "state_dict"), _forward(s, b.eval(), x, "state_dict")):
        s.fail("state_dict", "after load_state_dict the eval output differs from the original module's",
               "register all state (running statistics, step counters) with register_buffer, not as plain attributes")


def _check_copy(s: _Norm) -> None:
    m = s.build()
    _train_steps(s, m)
    x = s.input(2, 5, s.num_features)
    want = _forward(s, m.eval(), x, "copy")
    try:
        clones = {"copy.deepcopy": copy.deepcopy(m), "pickle": pickle.loads(pickle.dumps(m))}
    except Exception as exc:
        s.fail("copy", f"deepcopy/pickle of the module failed: {type(exc).__name__}: {exc}",
               "define the module class at module top level and keep no lambdas, open files or "
               "local functions in attributes (spawned DataLoader workers, DDP and EMA copy modules)")
    for how, c in clones.items():
        if not torch.equal(_forward(s, c.eval(), x, "copy"), want):
            s.fail("copy", f"the module after {how} gives a different eval output", "keep all state in parameters/buffers")


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
            warnings.warn(f"{s.label}: context keyword {k!r} has no default, so the norm cannot be built outside "
                          f"a normlight model (e.g. as a timm norm_layer)", ConformanceWarning, stacklevel=3)
    if not named:
        return
    received: dict = {}

    def spy(*args, **kwargs):
        received.update(kwargs)
        return s.factory(*args, **kwargs)

    spy.__signature__ = inspect.signature(s.factory)
    ctx = {"layer_idx": 2, "num_layers": 4, "site": "mlp_in"}
    torch.manual_seed(0)
    normlight.create_norm(spy, s.num_features, **ctx, **s.options)
    missing = [k for k in named if received.get(k) != ctx[k]]
    if missing:
        s.fail("context", f"the factory names {missing} but did not receive them from normlight.create_norm",
               "name the context keywords as explicit parameters of the factory (not only via **kwargs)")
    x = s.input(2, 3, s.num_features)
    for layer in (0, 3):
        for site in (tuple(sites) if "site" in named else ("mlp_in",)):
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
        s.fail("train_eval", f"an eval forward changed {changed}", "update statistics and counters only when self.training")
    if not _close(_forward(s, m, x[:1], "train_eval"), y1[:1], 1e-5):
        s.fail("train_eval", "in eval mode the output of one sample depends on the other samples of the batch",
               "in eval normalize with running estimates, never with statistics of the current batch")
    if getattr(m, "uses_batch_statistics", False):
        return
    m = s.build().train()
    x2 = x.clone()
    x2[1:] = s.input(2, 5, c, seed=9)
    ya, yb = _forward(s, copy.deepcopy(m), x, "train_eval"), _forward(s, copy.deepcopy(m), x2, "train_eval")
    if not _close(ya[:1], yb[:1], 1e-5):
        s.fail("train_eval", "in training mode the output of sample 0 changes when other samples change, so the "
               "norm uses batch statistics, but it does not declare them",
               "set the class attribute uses_batch_statistics = True (normlight then syncs it across ranks and "
               "logs its batch-statistics fluctuation), and expose batch_stat / running_stat")


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
            s.fail("batch_statistics", f"after a training forward `{attr}` is "
                   f"{tuple(t.shape) if isinstance(t, torch.Tensor) else t!r}, not a finite tensor of shape ({c},)",
                   "a batch-statistic norm sets self.batch_stat (detached per-channel statistic it normalized with) "
                   "in every training forward and exposes self.running_stat (the estimate used in eval)")
    if inner.batch_stat.requires_grad:
        s.fail("batch_statistics", "batch_stat requires grad", "store batch_stat.detach()")
    try:
        takes_mask = "mask" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        takes_mask = False
    if not takes_mask:
        warnings.warn(f"{s.label}: forward has no `mask` parameter, so padding tokens enter its batch statistics "
                      "in language models; add forward(x, mask=None)", ConformanceWarning, stacklevel=3)
        return
    x = s.input(2, 6, c)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    a, b = s.build(seed=0), s.build(seed=0)
    xa, xb = x.clone(), x.clone()
    xa[~mask], xb[~mask] = 1e3, -7.0  # two kinds of padding garbage: neither may reach the statistics
    ya = _forward(s, a, xa, "batch_statistics", mask=mask)[mask]
    yb = _forward(s, b, xb, "batch_statistics", mask=mask)[mask]
    if not _close(ya, yb, 1e-4) or not _close(a.running_stat, b.running_stat, 1e-5):
        s.fail("batch_statistics", "with mask=... the outputs of real tokens (or the running statistics) depend on "
               "the values at padded positions", "take every statistic only over positions where mask is True "
               "(mask has shape x.shape[:-1], True = real token); still normalize the padded positions")


# ---- distributed sync: 2 gloo ranks in subprocesses against one process on the full batch ---------
def _spec_for_subprocess(s: _Norm) -> str:
    if isinstance(s.spec, str):
        return s.spec
    target = s.spec.func if isinstance(s.spec, functools.partial) else s.spec
    mod, qual = getattr(target, "__module__", None), getattr(target, "__qualname__", "")
    if isinstance(s.spec, functools.partial) or not mod or "<locals>" in qual or mod == "__main__":
        s.fail("distributed", f"{s.spec!r} cannot be re-imported in a worker process",
               "pass the registered name (e.g. 'mynorm'), or a factory defined at the top level of an importable module")
    return f"py:{mod}:{qual}"


def _load_spec(spec: str) -> Any:
    if not spec.startswith("py:"):
        return spec
    _, mod, qual = spec.split(":", 2)
    return functools.reduce(getattr, qual.split("."), importlib.import_module(mod))


def _sync_case(spec: Any, num_features: int, options: dict, context: dict, rank: int, world: int) -> dict:
    """One training forward+backward on this rank's shard (rank 0 of world 1 = the full batch)."""
    torch.manual_seed(0)
    m = normlight.create_norm(spec, num_features, **context, **options).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, num_features, generator=g) * 2 + 0.5
    w = torch.randn(4, 6, num_features, generator=g)
    xs = x.chunk(world)[rank].clone().requires_grad_()
    y = m(xs)
    (y * w.chunk(world)[rank]).sum().backward()
    return {"y": y.detach(), "xgrad": xs.grad, "grads": {n: p.grad for n, p in m.named_parameters() if p.grad is not None},
            "buffers": {n: b for n, b in m.state_dict().items() if b.is_floating_point()}}


def _dist_worker(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(cfg["port"]))
    dist.init_process_group("gloo", rank=cfg["rank"], world_size=cfg["world"])
    try:
        out = _sync_case(_load_spec(cfg["spec"]), cfg["num_features"], cfg["options"], cfg["context"],
                         cfg["rank"], cfg["world"])
        torch.save(out, cfg["out"])
        dist.barrier()  # no rank tears down gloo while the other still talks to it
    finally:
        dist.destroy_process_group()
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_ranks(s: _Norm, spec: str, tmp: str, world: int, timeout: float) -> str | None:
    """Launch ``world`` gloo ranks; return None on success, else the failing rank's output tail."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    port, procs = _free_port(), []
    for rank in range(world):
        cfg = dict(spec=spec, num_features=s.num_features, options=s.options, context=s.context, rank=rank,
                   world=world, port=port, out=os.path.join(tmp, f"rank{rank}.pt"))
        procs.append(subprocess.Popen([sys.executable, "-m", "normlight.testing", "--dist-worker", json.dumps(cfg)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    failed = None
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            s.fail("distributed", f"the 2-rank gloo run did not finish within {timeout:.0f} s",
                   "make sure every rank issues the same collectives in the same order")
        if p.returncode and failed is None:
            failed = f"a rank exited with {p.returncode}:\n    " + "\n    ".join(out.strip().splitlines()[-8:])
    return failed


def _check_distributed(s: _Norm, timeout: float = 180.0) -> None:
    if not s.batch_stats:
        return  # nothing crosses the batch, so nothing needs syncing
    spec, world = _spec_for_subprocess(s), 2
    with tempfile.TemporaryDirectory() as tmp:
        failed = _run_ranks(s, spec, tmp, world, timeout)
        if failed and ("EADDRINUSE" in failed or "address already in use" in failed.lower()):
            failed = _run_ranks(s, spec, tmp, world, timeout)  # another process took the free port: retry once
        if failed:
            s.fail("distributed", f"the 2-rank gloo run failed: {failed}",
                   "the norm must work under torch.distributed (gloo on CPU)")
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(world)]
    full = _sync_case(_load_spec(spec), s.num_features, s.options, s.context, 0, 1)
    fix = ("when torch.distributed is initialized with world_size > 1 and the module is training, all-reduce the "
           "per-channel sums and counts with a differentiable all-reduce (see docs/plugins.md, 'Batch statistics')")
    for key in ("y", "xgrad"):
        if not _close(torch.cat([r[key] for r in ranks]), full[key], 1e-5):
            what = "outputs" if key == "y" else "input gradients"
            s.fail("distributed", f"2 ranks on half batches give different {what} than one process on the full batch", fix)
    for n, g in full["grads"].items():
        if not _close(sum(r["grads"][n] for r in ranks), g, 1e-5):
            s.fail("distributed", f"the summed rank gradients of parameter {n!r} differ from the full-batch gradient", fix)
    for n, b in full["buffers"].items():
        if not all(_close(r["buffers"][n], b, 1e-5) for r in ranks):
            s.fail("distributed", f"buffer {n!r} after one step differs from the full-batch run on some rank",
                   fix + ", and update running estimates from the synced statistics")


def check_norm_plugin(norm: Any, num_features: int = 64, *, options: dict | None = None,
                      context: dict | None = None, checks: Iterable[str] | None = None, skip: Iterable[str] = (),
                      dtypes: Iterable[torch.dtype] = DEFAULT_DTYPES, sites: Iterable[str] = SITES,
                      distributed: bool = False) -> None:
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
        "build": lambda: _check_build(s), "shape": lambda: _check_shape(s),
        "dtypes": lambda: _check_dtypes(s, dtypes), "channels_first": lambda: _check_channels_first(s),
        "gradients": lambda: _check_gradients(s), "state_dict": lambda: _check_state_dict(s),
        "copy": lambda: _check_copy(s), "context": lambda: _check_context(s, sites),
        "train_eval": lambda: _check_train_eval(s), "batch_statistics": lambda: _check_batch_statistics(s),
        "distributed": lambda: _check_distributed(s),
    }
    for name in NORM_CHECKS:  # always in contract order: later checks rely on earlier ones
        if name in names and name not in skip:
            runners[name]()


# ------------------------------------------------------------------------------------------------
# placement plugins
# ------------------------------------------------------------------------------------------------
class _Placement:
    def __init__(self, spec: Any, norm: Any):
        self.spec, self.norm = spec, norm
        try:
            self.cls = normlight.get_placement(spec)
        except NormlightError as exc:
            raise ConformanceError(f"normlight conformance: placement {spec!r}: {exc}\n  fix: subclass "
                                   "normlight.blocks.base.Block and override forward") from exc
        self.label = f"placement {getattr(self.cls, '__module__', '?')}.{self.cls.__qualname__}"

    def fail(self, check: str, problem: str, fix: str) -> None:
        raise ConformanceError(f"{self.label} fails the '{check}' check: {problem}\n  fix: {fix}")

    def model(self, family: str, check: str) -> nn.Module:
        name, shape = {"gpt": ("gpt-nano", dict(depth=2)), "vit": ("vit-tiny", dict(depth=2, dim=32, num_heads=2))}[family]
        torch.manual_seed(0)
        try:
            return normlight.create_model(name, norm=self.norm, placement=self.cls, **shape)
        except Exception as exc:
            self.fail(check, f"building {name} (depth 2) with it raised {type(exc).__name__}: {exc}",
                      "keep Block's constructor signature and create norms with the base class helpers")


def _check_block_class(p: _Placement) -> None:
    doc = inspect.getdoc(p.cls) or ""
    if p.cls.__doc__ is None or len([ln for ln in doc.splitlines() if ln.strip()]) < 3:
        p.fail("block_class", "the class has no docstring drawing its data flow",
               "add a docstring with a small ASCII diagram (x --norm--> attn --+--> ...) of where the norms sit")
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
        p.fail(check, "the output after one SGD step (and after_optimizer_step) is not finite",
               "keep after_optimizer_step consistent with the block's forward")
    return out


def _check_gpt(p: _Placement) -> None:
    model = p.model("gpt", "gpt")
    idx = torch.randint(0, model.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    out = _train_step(p, model, idx, lambda y: y.float().logsumexp(-1).mean(), "gpt")
    if tuple(out.shape) != (2, 8, model.vocab_size):
        p.fail("gpt", f"logits have shape {tuple(out.shape)}, expected (2, 8, {model.vocab_size})",
               "a block must map (B, T, D) to (B, T, D)")
    model.eval()
    with torch.no_grad():
        a = model(idx)
        idx2 = idx.clone()
        idx2[:, -1] = (idx2[:, -1] + 1) % model.vocab_size
        b = model(idx2)
    if not torch.allclose(a[:, :-1], b[:, :-1], atol=1e-5):
        p.fail("gpt", "changing the last token changed the logits of earlier positions: information leaks "
               "from the future", "mix positions only through block.attn (which applies the causal mask)")


def _check_vit(p: _Placement) -> None:
    model = p.model("vit", "vit")
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(2, model.in_chans, model.img_size, model.img_size, generator=g)
    out = _train_step(p, model, imgs, lambda y: y.float().logsumexp(-1).mean(), "vit")
    if tuple(out.shape) != (2, model.num_classes):
        p.fail("vit", f"logits have shape {tuple(out.shape)}, expected (2, {model.num_classes})",
               "a block must map (B, T, D) to (B, T, D)")


def check_placement_plugin(placement: Any, *, norm: Any = "layernorm", checks: Iterable[str] | None = None) -> None:
    """Run the placement contract checks on ``placement`` (a registered name or a Block subclass).

    Checks (``PLACEMENT_CHECKS``): the class (Block subclass, diagram docstring, hooks), a tiny GPT
    (forward shape, finite output and gradients, every block trains, causal, after_optimizer_step) and
    a tiny ViT. Raises :class:`ConformanceError` naming the check and the fix.
    """
    names = list(checks) if checks is not None else list(PLACEMENT_CHECKS)
    if set(names) - set(PLACEMENT_CHECKS):
        raise ValueError(f"unknown placement checks {sorted(set(names) - set(PLACEMENT_CHECKS))}; choose from {list(PLACEMENT_CHECKS)}")
    p = _Placement(placement, norm)
    runners = {"block_class": _check_block_class, "gpt": _check_gpt, "vit": _check_vit}
    for name in PLACEMENT_CHECKS:
        if name in names:
            runners[name](p)


# ------------------------------------------------------------------------------------------------
# pytest base classes: subclass with a name starting with "Test"; each contract check is one test
# ------------------------------------------------------------------------------------------------
class NormPluginConformance:
    """Subclass as ``class TestMyNorm(NormPluginConformance): norm = "mynorm"`` to get one test per check."""

    norm: Any = None
    num_features: int = 64
    options: dict = {}
    context: dict = DEFAULT_CONTEXT
    dtypes: tuple = DEFAULT_DTYPES
    sites: tuple = SITES
    distributed: bool = False  # the 2-rank gloo check takes a few seconds; opt in for batch-statistic norms

    def _run(self, check: str) -> None:
        if self.norm is None:
            raise ConformanceError(f"{type(self).__name__} must set the class attribute `norm` (a name or a factory)")
        check_norm_plugin(self.norm, self.num_features, options=self.options, context=self.context, checks=[check],
                          dtypes=self.dtypes, sites=self.sites)

    def test_build(self):
        self._run("build")

    def test_shape(self):
        self._run("shape")

    def test_dtypes(self):
        self._run("dtypes")

    def test_channels_first(self):
        self._run("channels_first")

    def test_gradients(self):
        self._run("gradients")

    def test_state_dict(self):
        self._run("state_dict")

    def test_copy(self):
        self._run("copy")

    def test_context(self):
        self._run("context")

    def test_train_eval(self):
        self._run("train_eval")

    def test_batch_statistics(self):
        self._run("batch_statistics")

    def test_distributed(self):
        if not self.distributed:
            import pytest

            pytest.skip("distributed sync check is opt-in: set distributed = True")
        self._run("distributed")


class PlacementPluginConformance:
    """Subclass as ``class TestMyBlock(PlacementPluginConformance): placement = "myblock"``."""

    placement: Any = None
    norm: Any = "layernorm"

    def _run(self, check: str) -> None:
        if self.placement is None:
            raise ConformanceError(f"{type(self).__name__} must set the class attribute `placement`")
        check_placement_plugin(self.placement, norm=self.norm, checks=[check])

    def test_block_class(self):
        self._run("block_class")

    def test_gpt(self):
        self._run("gpt")

    def test_vit(self):
        self._run("vit")


__all__ = ["ConformanceError", "ConformanceWarning", "NORM_CHECKS", "PLACEMENT_CHECKS", "SITES",
           "NormPluginConformance", "PlacementPluginConformance", "check_norm_plugin", "check_placement_plugin"]


if __name__ == "__main__" and sys.argv[1:2] == ["--dist-worker"]:
    sys.exit(_dist_worker(sys.argv[2:]))
