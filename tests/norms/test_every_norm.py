"""Behaviours every built-in norm shares beyond the plugin contract: factory ``device``/``dtype`` reach every
tensor, ``set_fast_norms(model, False)`` really runs the reference code, the reference code returns the input's
dtype, and a wrong feature count is reported under the norm's own name."""

from __future__ import annotations

import copy

import pytest
import torch

from normlight import plugins
from normlight.norms import fast
from normlight.norms.factory import create_norm
from normlight.testing.common import DEFAULT_CONTEXT

BUILTINS = sorted(e.name for e in plugins.entries("norms") if e.dist == "normlight")
C = 64  # divisible by the default 32 groups of groupnorm / bcn / evonorm_s0


def build(name, **kw):
    torch.manual_seed(0)
    return create_norm(name, C, **DEFAULT_CONTEXT, **kw)


def tensors(m):
    """Every parameter and buffer of ``m`` (also the ones of submodules), by name."""
    return {**dict(m.named_parameters()), **dict(m.named_buffers())}


def custom_nodes(y: torch.Tensor) -> list[str]:
    """Names of the fast-path autograd Functions (``normlight.norms._fast_*``) in the graph that produced ``y``."""
    seen, todo, found = set(), [y.grad_fn], []
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        cls = getattr(fn, "_forward_cls", None)  # the autograd.Function behind a custom node
        if cls is not None and cls.__module__.startswith("normlight.norms._fast_"):
            found.append(cls.__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return found


def inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(4, 5, C, generator=g) * 2.0 + 0.5).to(dtype)


@pytest.mark.parametrize("name", BUILTINS)
def test_device_and_dtype_reach_every_parameter_and_buffer(name):
    # deferred init (FSDP, big models) builds on the meta device; a tensor built without the factory
    # keywords would land on the CPU and in float32
    on_meta = build(name, device="meta")
    assert all(t.device.type == "meta" for t in tensors(on_meta).values()), {
        k: t.device for k, t in tensors(on_meta).items()
    }
    wide = build(name, dtype=torch.float64)
    floats = {k: t.dtype for k, t in tensors(wide).items() if t.is_floating_point()}
    assert all(dt == torch.float64 for dt in floats.values()), floats
    if list(wide.parameters()):
        assert floats, name


@pytest.mark.parametrize("name", BUILTINS)
def test_set_fast_norms_off_runs_the_reference_code(name):
    m = build(name)
    on = custom_nodes(m.train()(inputs().requires_grad_()))
    # torch's own kernels serve these by default (batchnorm takes its fast path only with a mask or sync)
    if name not in ("identity", "layernorm", "layernorm_scaling", "batchnorm"):
        assert on, f"{name}: no fast path in the graph with the default settings"
    assert fast.set_fast_norms(m, False) >= 1
    for mode in (True, False):  # train and eval forwards (unifiednorm has an eval fast path of its own)
        off = custom_nodes(m.train(mode)(inputs().requires_grad_()))
        assert off == [], f"{name}: fast paths still run with set_fast_norms(model, False): {off}"


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("half_params", [False, True])
@pytest.mark.parametrize("name", BUILTINS)
def test_reference_code_returns_the_input_dtype(name, half_params, training):
    # the contract checks the default (fast) path; the reference code must also cast its float32 result back
    m = build(name, dtype=torch.bfloat16 if half_params else None).train(training)
    fast.set_fast_norms(m, False)
    x = inputs(torch.bfloat16)
    with torch.no_grad():
        y = m(x)
    assert y.dtype == torch.bfloat16
    with torch.no_grad():
        want = build(name).train(training)(x.float())
    scale = 1 + want.abs().max()
    assert (y.float() - want).abs().max() <= 0.06 * scale, name  # bf16 rounding, not a different result


# these norms check the width themselves; the others meet torch's own shape error in their first operation
NAMED_WIDTH_CHECK = sorted(
    set(BUILTINS) - {"identity", "dyt", "grn", "layernorm", "layernorm_scaling", "prepbn", "repbn"}
)


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("name", NAMED_WIDTH_CHECK)
def test_a_wrong_feature_count_is_reported_under_the_norms_name(name, fast_path):
    m = build(name).train()
    fast.set_fast_norms(m, fast_path)
    with pytest.raises(ValueError, match=rf"^{name}\b.*\b{C}\b.*\(4, 5, 48\)"):
        m(torch.randn(4, 5, 48))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("name", BUILTINS)
def test_a_bf16_input_is_normalized_in_float32_and_rounded_once(name, fast_path, training):
    # "half inputs are normalized with float32 statistics": the bf16 result is the float64 result of the same
    # module rounded once, so within half a bf16 ulp (2^-8 relative) of it; statistics formed in bf16 storage,
    # or an intermediate rounded to bf16, put elements 2-3 half-ulps off
    m = build(name).train(training)
    fast.set_fast_norms(m, fast_path)
    wide = copy.deepcopy(m).double()
    x = inputs(torch.bfloat16)
    with torch.no_grad():
        y, want = m(x).double(), wide(x.double())
    bound = 2**-8 * want.abs() + 1e-5 * want.abs().max()
    excess = ((y - want).abs() - bound).max().item()
    assert excess <= 0, f"{name}: a bf16 output is {excess:.3g} beyond one rounding of the float64 result"
