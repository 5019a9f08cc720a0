"""The shared rule of every built-in norm (norms/_common.py): half inputs are normalized with float32
statistics and cast back; a module cast to bf16 (``precision="bf16-true"``) still runs, train and eval."""

from __future__ import annotations

import copy

import pytest
import torch

import normlight
from normlight import registry
from tests.norms.reference import build, randn


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm", "scalenorm", "l2norm", "crmsnorm", "dyt"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("half_params", [False, True], ids=["fp32-params", "half-params"])
def test_half_inputs_use_float32_statistics(name, dtype, half_params):
    # large offset: a mean/variance accumulated in 16 bits loses most digits of the result.
    # fp32 parameters take the explicit upcast; half parameters take torch's fused kernels where they exist.
    x = torch.from_numpy(randn(4, 768, seed=15, shift=200.0)).to(dtype)
    m = build(name, 768)
    ref = m.double()(x.double())  # same half-rounded input, exact statistics
    y = (m.to(dtype) if half_params else m.float())(x)
    assert y.dtype == dtype
    tol = 2**-7 if dtype == torch.bfloat16 else 2**-10
    assert (y.double() - ref).abs().max().item() <= 2 * tol * ref.abs().max().item()


@pytest.mark.parametrize("name", ["groupnorm", "instancenorm", "grn"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_position_norms_half_inputs_use_float32_statistics(name, dtype):
    x = torch.from_numpy(randn(2, 16, 64, seed=42, shift=200.0)).to(dtype)
    m = build(
        name, 64, **({"num_groups": 8} if name == "groupnorm" else {"affine": True} if name == "instancenorm" else {})
    )
    if name == "grn":
        with torch.no_grad():
            m.gamma.fill_(1.0)
    ref = m.double()(x.double())
    y = m.float()(x)
    assert y.dtype == dtype
    tol = 2**-7 if dtype == torch.bfloat16 else 2**-10
    assert (y.double() - ref).abs().max().item() <= 2 * tol * ref.abs().max().item()
    y = m.to(dtype)(x)  # half parameters too
    assert y.dtype == dtype
    tol = 2**-7 if dtype == torch.bfloat16 else 2**-10
    assert (y.double() - ref).abs().max().item() <= 2 * tol * ref.abs().max().item()


BUILTINS = [n for n in normlight.list_norms() if registry.lookup("norms", n).dist == "normlight"]
NEEDS = {
    "layernorm_scaling": {"layer_idx": 1},
    "groupnorm": {"num_groups": 4},
    "bcn": {"num_groups": 4},
    "evonorm_s0": {"num_groups": 4},
}


@pytest.mark.parametrize("name", BUILTINS)
def test_bf16_module_on_bf16_input(name):
    norm = normlight.create_norm(name, 16, **NEEDS.get(name, {})).to(torch.bfloat16)
    x = torch.randn(4, 6, 16, dtype=torch.bfloat16)
    for train in (True, False):
        norm.train(train)
        y = norm(x)
        assert y.dtype == torch.bfloat16 and y.shape == x.shape and torch.isfinite(y.float()).all(), (name, train)


C = 64  # divisible by the default 32 groups of groupnorm / bcn / evonorm_s0


def build_ctx(name, **kw):
    return normlight.create_norm(name, C, layer_idx=1, num_layers=4, **kw)


def tokens(seed=0, shift=0.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(4, 6, C, generator=g) + shift).to(dtype)


def perturb(module, seed=1):
    """Give every floating parameter and buffer a non-default value, so copies are really compared."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.add_(0.1 * torch.rand(t.shape, generator=g).to(t.dtype))  # positive: keeps variances valid
    return module


def outputs(module, x):
    """Train- and eval-mode outputs of independent copies (a training forward may update running stats)."""
    train, ev = copy.deepcopy(module).train(), copy.deepcopy(module).eval()
    with torch.no_grad():
        return train(x), ev(x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_keeps_half_dtype_and_uses_float32_statistics(name, dtype):
    # A large common offset: statistics accumulated in 16 bits lose most digits; in float32 the output
    # matches the float32 computation on the same (rounded) input up to the final 16-bit rounding.
    m = perturb(build_ctx(name))
    x = tokens(seed=4, shift=100.0, dtype=dtype)
    for ref, got in zip(outputs(m, x.float()), outputs(m, x)):
        assert got.dtype == dtype and torch.isfinite(got).all()
        tol = 2 * (2**-8 if dtype == torch.bfloat16 else 2**-11) * ref.abs().max().item() + 1e-6
        assert (got.float() - ref).abs().max().item() <= tol
