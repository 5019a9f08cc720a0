"""Fast paths of the built-in norms: the switch, compiled kernel bodies, and the shared row/column reductions.

Every built-in norm has two implementations of the same formula:

- the *reference* (its plain eager code, kept in ``forward`` as written from the paper), and
- the *fast path*: a custom ``torch.autograd.Function`` with an analytic backward that saves the fewest
  tensors it can (``_fast_token.py``, ``_fast_group.py``, ``_fast_batch.py``), default on.

Both give the same outputs, gradients and buffers (tests/norms/test_fast.py checks it). The fast path
is chosen per module by the attribute ``fast`` (absent = on); ``set_fast_norms(model, False)`` switches a
whole model back to the reference code.

The arithmetic of a fast path lives in *kernels*: pure tensor functions (no state, no Python side effects)
decorated with ``@kernel``. A kernel runs eagerly, or compiled with ``torch.compile`` (inductor: C++ on
CPU, Triton on GPU) on the modules switched by ``compile_norms(model)``. A kernel is compiled once and
shared by every module that calls it (dynamic shapes after the first new shape, so a new sequence length
does not recompile again); the compile time is accumulated in ``compile_stats()``. Inside a
whole-model ``torch.compile`` the kernels are traced inline, never compiled separately.
"""

from __future__ import annotations

import time
import types
import warnings
import zlib
from typing import Callable

import torch
from torch import nn

_STATS = {"seconds": 0.0, "graphs": 0}


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class Kernel:
    """A pure tensor function with an eager and a lazily compiled variant (see the module docstring)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self._compiled: dict = {}  # one compiled function per set of non-tensor arguments

    def __call__(self, *args, compiled: bool = False):
        """Run the function, compiled when ``compiled`` (and not already inside a compiled graph).

        Traced (compiled here or inside a whole-model compile), tensors go in contiguous: the kernels
        write through ``out=``, which dynamo cannot trace on a non-contiguous tensor (a channels-first
        map seen channels-last is one).
        """
        if torch.compiler.is_compiling():
            return self.fn(*_contiguous(args))
        if not compiled:
            return self.fn(*args)
        args = _contiguous(args)
        # one compiled copy per set of Python-number arguments (group counts, eps, flags), each with its own
        # code object: dynamo keeps one cache per code object, and a second group count on a shared one made
        # the count symbolic ("automatic dynamic"), whose CPU code ran GroupNorm's backward 16x slower
        key = tuple(
            a if isinstance(a, (bool, int, float, str, type(None))) else tuple(a)
            for a in args
            if not isinstance(a, torch.Tensor)
        )
        if isinstance(self._compiled, _EagerOnly):
            return self.fn(*args)
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compiled[key] = torch.compile(_own_code(self.fn, key), fullgraph=True)
        before, t0 = _graphs_compiled(), time.perf_counter()
        try:
            out = fn(*args)
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            # dynamo's recompile limit (per function, 8 by default) reached by many norms and shapes in
            # one process: this kernel runs eagerly from now on (same results), with one warning
            warnings.warn(f"compile_norms: kernel {self.__name__} hit torch.compile's recompile limit; runs eagerly")
            self._compiled = _EagerOnly()
            return self.fn(*args)
        new = _graphs_compiled() - before
        if new:  # this call compiled (or loaded from the inductor cache) a graph: count its time
            _STATS["seconds"] += time.perf_counter() - t0
            _STATS["graphs"] += new
        return out


class _EagerOnly(dict):
    """Marks a kernel that stopped compiling (see ``Kernel.__call__``)."""


def _own_code(fn: Callable, key: tuple) -> Callable:
    """A copy of ``fn`` whose code object is its own and named after ``key``: dynamo keys its cache on the
    code object and its automatic-dynamic history on (file, line, name), so neither is shared between keys."""
    name = f"{fn.__name__}__{zlib.crc32(repr(key).encode()):08x}"  # stable across processes (PGO cache)
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def _contiguous(args: tuple) -> tuple:
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def kernel(fn: Callable) -> Kernel:
    """Decorator: make ``fn`` (pure tensor math) a :class:`Kernel`."""
    return Kernel(fn)


def compile_stats() -> dict:
    """``{"seconds": wall time spent compiling norm kernels in this process, "graphs": how many}``."""
    return dict(_STATS)


def is_builtin_norm(module: nn.Module) -> bool:
    """True for the norm modules defined in ``normlight.norms`` (the ones that have fast paths)."""
    return type(module).__module__.startswith("normlight.norms.")


def on(module: nn.Module) -> bool:
    """Whether ``module`` takes its fast path (the ``fast`` attribute; absent = on)."""
    return getattr(module, "fast", True)


def compiled(module: nn.Module) -> bool:
    """Whether ``module``'s fast path runs compiled kernels (set by :func:`compile_norms`)."""
    return getattr(module, "compile_kernels", False)


def set_fast_norms(model: nn.Module, enabled: bool = True) -> int:
    """Switch the fast paths of every built-in norm in ``model`` on or off; returns how many modules were set.

    Off means the reference eager code (slower; used by the tests that check the fast paths against it).
    """
    mods = [m for m in model.modules() if is_builtin_norm(m)]
    for m in mods:
        m.fast = bool(enabled)
    return len(mods)


def compile_norms(model: nn.Module, enabled: bool = True) -> int:
    """Run the fast paths of every built-in norm in ``model`` on ``torch.compile``d kernels; returns the count.

    Compilation is lazy (on the first forward/backward) and shared: all norms of one kind reuse the same
    compiled kernels. The seconds spent are in :func:`compile_stats`. Compiled results equal the eager ones
    to float rounding (inductor may reorder sums), not bit for bit, so this is opt-in. Works on CPU (C++)
    and GPU (Triton); it needs a C++ compiler on CPU.
    """
    mods = [m for m in model.modules() if is_builtin_norm(m)]
    for m in mods:
        m.compile_kernels = bool(enabled)
        if enabled:
            m.fast = True
    return len(mods)


# ------------------------------------------------------------------ shared reductions
# On CPU a column sum over rows through a matrix-vector product runs at copy speed, where
# ``t.sum(0)`` on a (M, C) tensor is slower and ``(a * b).sum(-1)`` writes a full temporary first.


def rows2d(t: torch.Tensor) -> torch.Tensor:
    """``t`` viewed as ``(rows, C)`` (features last)."""
    return t.reshape(-1, t.shape[-1])


def colsum(t: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-channel ``sum_rows(t)`` (or ``sum_rows(weight_row * t)``) of a ``(..., C)`` tensor, shape ``(C,)``."""
    t2 = rows2d(t)
    if weight is None:
        return t2.sum(0)
    return torch.mv(t2.t(), weight.reshape(-1).to(t2.dtype))


def rowdot(t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-row ``sum_C(t * v)`` of a ``(..., C)`` tensor with a ``(C,)`` vector, shape ``(..., 1)``."""
    return torch.mv(rows2d(t), v.to(t.dtype)).reshape(*t.shape[:-1], 1)
