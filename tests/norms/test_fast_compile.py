"""Compiled mode (``normlight.compile_norms``): the fast paths on torch.compile'd kernels equal eager.

The smoke test (fast suite) compiles one small forward kernel; everything else compiles many kernels
(15-60 s each cold on a 2-core CPU) and is marked slow.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch

import normlight
from normlight.norms import fast
from tests.norms.test_fast import CASES, IDS, batches, rel_err


def test_compile_norms_smoke_forward_kernel_compiles_and_matches_eager():
    m = normlight.create_norm("l2norm", 8)
    c = copy.deepcopy(m)
    assert normlight.compile_norms(c) == 1 and c.compile_kernels and c.fast
    before = fast.compile_stats()["graphs"]
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(c(x), m(x), rtol=1e-5, atol=1e-6)
    stats = fast.compile_stats()
    assert stats["graphs"] > before or before > 0  # compiled now, or earlier in this process
    assert stats["seconds"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name,options,steps", CASES, ids=IDS)
def test_compiled_norm_equals_eager_fast_path(name, options, steps):
    m = normlight.create_norm(name, 8, layer_idx=2, num_layers=4, **options)
    c = copy.deepcopy(m)
    normlight.compile_norms(c)
    for mode in (True, False):
        m.train(mode), c.train(mode)
        for x, dy, _ in batches((3, 5, 8), steps if mode else 1, masked=False):
            out = []
            for module in (m, c):
                xg = x.clone().requires_grad_()
                y = module(xg)
                y.backward(dy)
                out.append((y.detach(), xg.grad))
            assert rel_err(out[1][0], out[0][0]) < 1e-5 and rel_err(out[1][1], out[0][1]) < 1e-5
    for p_m, p_c in zip(m.parameters(), c.parameters()):
        assert rel_err(p_c.grad, p_m.grad) < 1e-4
    for b_m, b_c in zip(m.buffers(), c.buffers()):
        assert rel_err(b_c, b_m) < 1e-5 if b_m.is_floating_point() else torch.equal(b_c, b_m)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["l2norm", "dyt", "evonorm_s0"])
def test_compiled_norm_on_channels_first_maps_equals_eager(name):
    # a channels-first map reaches the kernels as a non-contiguous channels-last view; traced kernels
    # write through out=, which dynamo refuses on such a tensor (the benchmark's CNN rows failed so)
    options = {"num_groups": 2} if name == "evonorm_s0" else {}
    m = normlight.create_norm(name, 8, layout="channels_first", **options).train()
    c = copy.deepcopy(m)
    normlight.compile_norms(c)
    x, dy = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    out = []
    for module in (m, c):
        xg = x.clone().requires_grad_()
        y = module(xg)
        y.backward(dy)
        out.append((y.detach(), xg.grad))
    assert rel_err(out[1][0], out[0][0]) < 1e-5 and rel_err(out[1][1], out[0][1]) < 1e-5


@pytest.mark.slow
def test_kernel_past_the_recompile_limit_runs_eagerly_with_one_warning():
    import torch._dynamo.config as dynamo_config

    @fast.kernel
    def scaled(x, k: int):
        return x * k + x.sum()

    # config.patch, not monkeypatch: monkeypatch's undo deletes the config entry for later tests
    with dynamo_config.patch(recompile_limit=1), pytest.warns(UserWarning, match="recompile limit; runs eagerly"):
        outs = [scaled(torch.ones(n), k, compiled=True) for n, k in [(3, 1), (3, 2), (4, 3), (5, 3)]]
    assert [o.tolist() for o in outs] == [[4.0] * 3, [5.0] * 3, [7.0] * 4, [8.0] * 5]


@fast.kernel
def _group_sums(x, groups: int):
    """Per-(row, group) sums: the reshape by a Python-number group count that GroupNorm's kernels do."""
    return x.reshape(x.shape[0], groups, -1).sum(-1) * 2.0


def test_each_group_count_compiles_its_own_static_kernel(caplog):
    # dynamo keeps automatic-dynamic history per (file, line, function name): one shared function made the
    # second group count symbolic (ks0 in the C++), and that code ran GroupNorm's backward 16x slower
    import logging
    import re

    x = torch.randn(3, 24)
    first = _group_sums(x, 4, compiled=True)
    torch._logging.set_logs(output_code=True)
    try:
        with caplog.at_level(logging.DEBUG):
            out = _group_sums(x, 2, compiled=True)
    finally:
        torch._logging.set_logs()
    code = "\n".join(r.getMessage() for r in caplog.records if "Output code" in r.getMessage())
    torch.testing.assert_close(first, _group_sums(x, 4))
    torch.testing.assert_close(out, _group_sums(x, 2))
    assert "cpp_fused" in code or "def call" in code, "the second group count compiled no new kernel"
    symbols = sorted(set(re.findall(r"\bk?s\d+\b", code)))
    assert not symbols, f"the kernel for groups=2 has symbolic sizes {symbols}"


def test_kernel_runs_eagerly_by_default_compiles_on_request_and_counts_its_graphs():
    import torch._dynamo.config as dynamo_config

    zero = 0.0  # a closure variable and a default argument: the compiled copy of the function keeps both

    def shift(x, k: int, offsets: list, extra: float = 0.0):
        """``x * k`` plus the first offset."""
        return x * k + offsets[0] + extra + zero

    torch._dynamo.reset()  # forget graphs of an earlier run of this test in the process (dynamo caches per code)
    kern = fast.kernel(shift)
    assert kern.__name__ == "shift" and kern.__doc__ == shift.__doc__
    x = torch.arange(6.0).reshape(2, 3).t()  # not contiguous
    before = fast.compile_stats()
    assert torch.equal(kern(x, 2, [1.0]), x * 2 + 1)
    assert fast.compile_stats() == before  # eager unless asked: nothing compiled
    assert torch.equal(kern(x, 2, [1.0], compiled=True), x * 2 + 1)
    first = fast.compile_stats()
    assert first["graphs"] == before["graphs"] + 1 and first["seconds"] > before["seconds"]
    assert torch.equal(kern(x, 2, [1.0], compiled=True), x * 2 + 1)
    assert fast.compile_stats() == first  # the same arguments reuse the compiled graph
    t0 = time.perf_counter()
    assert torch.equal(kern(x, 3, [1.0], compiled=True), x * 3 + 1)  # a new constant: one more graph
    wall = time.perf_counter() - t0
    second = fast.compile_stats()
    assert second["graphs"] == first["graphs"] + 1 and 0 < second["seconds"] - first["seconds"] <= wall
    # each constant has its own compiled copy, so the recompile limit counts recompiles of one copy (new
    # shapes); past it the kernel falls back to eager for good, with one warning
    y = torch.arange(8.0).reshape(2, 4)
    with (
        dynamo_config.patch(recompile_limit=1),
        pytest.warns(
            UserWarning, match=r"^compile_norms: kernel shift hit torch.compile's recompile limit; runs eagerly$"
        ),
    ):
        assert torch.equal(kern(y, 3, [1.0], compiled=True), y * 3 + 1)
    assert torch.equal(kern(x, 5, [2.0], compiled=True), x * 5 + 2)
    assert fast.compile_stats() == second


def test_fast_and_compile_switches():
    m = normlight.create_norm("rmsnorm", 8)
    assert fast.on(m) is True and fast.compiled(m) is False  # defaults: fast path on, eager kernels
    assert fast.set_fast_norms(m, False) == 1 and fast.on(m) is False
    assert fast.set_fast_norms(m) == 1 and fast.on(m) is True  # default: switch on
    normlight.set_fast_norms(m, False)
    assert fast.compile_norms(m) == 1 and fast.compiled(m) is True and fast.on(m) is True
    assert fast.compile_norms(m, False) == 1 and fast.compiled(m) is False


def test_row_and_column_reductions_cast_the_vector_to_the_tensor_dtype():
    t = torch.randn(2, 3, 4, dtype=torch.float64)
    w, v = torch.randn(2, 3), torch.randn(4)  # float32
    tn = t.numpy()
    assert isinstance(tn, np.ndarray)
    np_w = w.double().numpy()
    torch.testing.assert_close(fast.colsum(t, w), torch.from_numpy((tn * np_w[..., None]).sum((0, 1))))
    torch.testing.assert_close(fast.colsum(t), torch.from_numpy(tn.sum((0, 1))))
    torch.testing.assert_close(fast.rowdot(t, v), torch.from_numpy((tn * v.double().numpy()).sum(-1, keepdims=True)))


# the kernels a compiled module still runs eagerly: GroupNorm's forward stays on torch's group_norm kernel
# (inductor's version of it on the channels_last view was 21x LayerNorm); only its backward compiles
EAGER_IN_COMPILED_MODE = {"gn_fwd"}


# the cases whose fast path runs @kernels (LayerNorm's, also under LayerNorm-Scaling, is torch's fused kernel)
KERNEL_CASES = [
    (c, i)
    for c, i in zip(CASES, IDS)
    if c[0] not in ("identity", "layernorm") and (c[0] != "layernorm_scaling" or c[1].get("base") == "rmsnorm")
]


@pytest.mark.parametrize("name,options,steps", [c for c, _ in KERNEL_CASES], ids=[i for _, i in KERNEL_CASES])
def test_compile_norms_asks_every_kernel_for_its_compiled_variant(kernel_calls, name, options, steps):
    from tests.norms.test_fast import takes_mask

    m = normlight.create_norm(name, 8, layer_idx=2, num_layers=4, **options)
    c = copy.deepcopy(m)
    normlight.compile_norms(c)
    results = []
    for module, want in ((m, False), (c, True)):
        kernel_calls.clear()
        out = []
        for mode in (True, False):
            module.train(mode)
            for x, dy, mask in batches((3, 5, 8), steps if mode else 1, masked=takes_mask(module)):
                for kw in ({}, {"mask": mask}) if mask is not None else ({},):
                    xg = x.clone().requires_grad_()
                    y = module(xg, **kw)
                    y.backward(dy)
                    out += [y.detach(), xg.grad]
        results.append(out + [p.grad for p in module.parameters()])
        # DyT's eager fast path is plain functions (no kernel); its compiled path is kernels
        assert bool(kernel_calls) == (want or name != "dyt"), f"{name}: {kernel_calls}"
        wrong = sorted({k for k, f in kernel_calls if bool(f) != want and not (want and k in EAGER_IN_COMPILED_MODE)})
        assert not wrong, f"{name}: kernels {wrong} not asked for compiled={want}"
        assert all(isinstance(f, bool) for _, f in kernel_calls)
    for got, want in zip(results[1], results[0]):  # the compiled-mode bodies (run eagerly here) equal eager ones
        assert rel_err(got, want) < 1e-5


TRACED_CASES = [(c, i) for c, i in zip(CASES, IDS) if c[0] in ("dyt", "groupnorm", "instancenorm", "bcn", "evonorm_s0")]


@pytest.mark.parametrize("name,options,steps", [c for c, _ in TRACED_CASES], ids=[i for _, i in TRACED_CASES])
def test_the_branches_taken_inside_a_traced_graph_equal_the_reference(monkeypatch, name, options, steps):
    # inside torch.compile normlight's code takes tensor-only variants (DyT's compiled bodies, the plain
    # per-sample sums and group moments of GroupNorm / EvoNorm-S0, kernels inlined); the compiler is not
    # run here (15-60 s a kernel): the code is told it is being traced and runs eagerly, against the reference
    from tests.norms.test_fast import compare, pair

    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    ref, fst = pair(name, options)
    compare(ref, fst, batches((3, 5, 8), steps, masked=False), 1e-5)
    fst.eval()
    compare(ref, fst, batches((2, 4, 8), 1, masked=False, seed=7), 1e-5)


def test_kernels_traced_inside_a_compiled_graph_get_contiguous_tensors(monkeypatch):
    # inside a whole-model torch.compile the kernels are traced inline; they write through out=, which dynamo
    # refuses on a non-contiguous tensor (a channels-first map seen channels-last), so tensors go in contiguous
    seen = []

    @fast.kernel
    def scaled(x, k: int):
        seen.append(x.is_contiguous())
        return x * k

    x = torch.arange(6.0).reshape(2, 3).t()
    assert torch.equal(scaled(x, 2), x * 2) and seen == [False]  # eagerly: as given
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.equal(scaled(x, 2), x * 2) and seen == [False, True]
