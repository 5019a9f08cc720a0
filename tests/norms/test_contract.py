"""The norm plugin contract, checked for EVERY built-in norm registered by the ``normlight`` distribution.

Per norm: half-precision inputs (statistics in float32, dtype preserved), backward, state_dict round
trip, pickle and deepcopy, the channels-first adapter (or the norm's own fast path), the batch-statistic
extras, and a description + paper shown by ``normlight plugins list --load --json``.
"""

import copy
import json
import pickle
import subprocess
import sys

import pytest
import torch

import normlight
from normlight import plugins
from normlight.layout import ChannelsFirst

BUILTINS = sorted(e.name for e in plugins.entries("norms") if e.dist == "normlight")
C = 64  # divisible by the default 32 groups of groupnorm / bcn / evonorm_s0
CONTEXT = dict(layer_idx=1, num_layers=4)  # offered to every norm; passed only to those that name it


def _flag(name):
    try:
        return bool(getattr(normlight.registry.lookup("norms", name).load(), "uses_batch_statistics", False))
    except normlight.PluginError:
        return False  # a norm that fails to import already fails every other test here


BATCH_STAT = [n for n in BUILTINS if _flag(n)]


def build(name, **kw):
    return normlight.create_norm(name, C, **CONTEXT, **kw)


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


def test_every_entry_point_is_covered():
    assert {"layernorm", "rmsnorm", "dyt", "identity", "groupnorm", "grn", "layernorm_scaling"} <= set(BUILTINS)
    assert "batchnorm" in BATCH_STAT and "layernorm" not in BATCH_STAT


@pytest.mark.parametrize("name", BUILTINS)
def test_builds_normalizes_shape_and_backpropagates(name):
    m = build(name)
    x = tokens(seed=2).requires_grad_()
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    (y * tokens(seed=3)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in m.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", BUILTINS)
def test_half_inputs_keep_dtype_and_use_float32_statistics(name, dtype):
    # A large common offset: statistics accumulated in 16 bits lose most digits; in float32 the output
    # matches the float32 computation on the same (rounded) input up to the final 16-bit rounding.
    m = perturb(build(name))
    x = tokens(seed=4, shift=100.0, dtype=dtype)
    for ref, got in zip(outputs(m, x.float()), outputs(m, x)):
        assert got.dtype == dtype and torch.isfinite(got).all()
        tol = 2 * (2 ** -8 if dtype == torch.bfloat16 else 2 ** -11) * ref.abs().max().item() + 1e-6
        assert (got.float() - ref).abs().max().item() <= tol


@pytest.mark.parametrize("name", BUILTINS)
def test_state_dict_round_trip(name):
    src = perturb(build(name))
    with torch.no_grad():
        src.train()(tokens(seed=5))  # move running statistics / counters away from their init
    dst = build(name)
    dst.load_state_dict(src.state_dict())  # strict
    assert src.state_dict().keys() == dst.state_dict().keys()
    x = tokens(seed=6)
    for a, b in zip(outputs(src, x), outputs(dst, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", BUILTINS)
def test_pickle_and_deepcopy(name):
    m = perturb(build(name))
    x = tokens(seed=7)
    expect = outputs(m, x)
    for twin in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert type(twin) is type(m)
        for a, b in zip(expect, outputs(twin, x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", BUILTINS)
def test_channels_first_equals_channels_last_on_moved_input(name):
    last = perturb(build(name))
    first = build(name, layout="channels_first")
    inner = first.norm if isinstance(first, ChannelsFirst) else first
    inner.load_state_dict(last.state_dict())
    x = torch.randn(4, C, 5, 3, generator=torch.Generator().manual_seed(8))
    for a, b in zip(outputs(first, x), outputs(last, x.movedim(1, -1))):
        assert a.shape == x.shape
        torch.testing.assert_close(a, b.movedim(-1, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BATCH_STAT)
def test_batch_statistic_extras(name):
    m = build(name)
    x = tokens(seed=9)
    with torch.no_grad():
        m.train()(x)
    for attr in ("batch_stat", "running_stat"):
        stat = getattr(m, attr)
        assert isinstance(stat, torch.Tensor) and stat.shape == (C,) and not stat.requires_grad, attr
    mask = torch.ones(x.shape[:-1], dtype=torch.bool)
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    with torch.no_grad():
        torch.testing.assert_close(a(x, mask=mask), b(x))  # an all-true mask changes nothing


@pytest.fixture(scope="module")
def cli_rows():
    out = subprocess.run([sys.executable, "-m", "normlight.cli", "plugins", "list", "--kind", "norms", "--load", "--json"],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return {r["name"]: r for r in json.loads(out) if r["distribution"] == "normlight"}


@pytest.mark.parametrize("name", BUILTINS)
def test_listed_with_description_and_paper(name, cli_rows):
    row = cli_rows[name]
    cls = normlight.registry.lookup("norms", name).load()
    assert row["status"] == "ok", row["error"]
    assert row["description"] and row["description"] == getattr(cls, "description", None)
    assert row["paper"] and any(ch.isdigit() for ch in row["paper"])  # "Author et al. YEAR, Title"
