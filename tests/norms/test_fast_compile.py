"""Compiled mode (``normlight.compile_norms``): the fast paths on torch.compile'd kernels equal eager.

The smoke test (fast suite) compiles one small forward kernel; everything else compiles many kernels
(15-60 s each cold on a 2-core CPU) and is marked slow.
"""

from __future__ import annotations

import copy

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
def test_kernel_past_the_recompile_limit_runs_eagerly_with_one_warning(monkeypatch):
    import torch._dynamo.config as dynamo_config

    @fast.kernel
    def scaled(x, k: int):
        return x * k + x.sum()

    monkeypatch.setattr(dynamo_config, "recompile_limit", 1)
    with pytest.warns(UserWarning, match="recompile limit; runs eagerly"):
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
