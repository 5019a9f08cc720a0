"""Fixtures shared by the norm tests."""

from __future__ import annotations

import pytest

from normlight.norms import fast


@pytest.fixture
def kernel_calls(monkeypatch):
    """Every ``@kernel`` call as ``(kernel name, compiled flag asked for)``; the kernels run eagerly.

    Compiling each kernel takes 15-60 s, so the compiler is not run: the test checks that the flag reaches
    every kernel (``compile_norms`` would otherwise silently run eager code) and runs the bodies eagerly.
    """
    calls = []
    eager_call = fast.Kernel.__call__

    def record(self, *args, compiled=False):
        calls.append((self.__name__, compiled))
        return eager_call(self, *args)

    monkeypatch.setattr(fast.Kernel, "__call__", record)
    return calls
