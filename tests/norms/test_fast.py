"""Every fast path (normlight/norms/_fast_*.py) equals the reference eager code of its norm.

For every built-in norm and its distinguishing options: several training steps (forward + backward,
statistics schedules crossing their warmups, padding masks), then eval; outputs, input gradients,
parameter gradients and every buffer of the fast module equal those of the same module with
``set_fast_norms(m, False)``: fp32 within 1e-5 of the reference's largest magnitude, integer buffers
exactly. A reduction with heavy cancellation (e.g. DyT's scalar ``alpha`` gradient, a sum of terms
~100x larger than the result) may differ more; then the fast value must be at least as close to a
float64 run of the reference as the fp32 reference itself is (within 4x: e.g. the sigmoid form of DyT
rounds a few ulp where tanh rounds one). Exact backwards are also
checked with float64 ``gradcheck``.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

import normlight
from normlight.norms import fast

C = 8

# (name, options, steps): options that exercise each fast path's branches; small shapes, quick
CASES = [
    ("layernorm", {}, 2),
    ("rmsnorm", {}, 2),
    ("rmsnorm", {"bias": True, "eps": 1e-6}, 2),
    ("rmsnorm", {"elementwise_affine": False}, 2),
    ("crmsnorm", {}, 2),
    ("crmsnorm", {"elementwise_affine": True}, 2),
    ("scalenorm", {}, 2),
    ("l2norm", {}, 2),
    ("l2norm", {"eps": 1e-12}, 2),
    ("dyt", {}, 2),
    ("dyt", {"bias": False, "alpha_init": 0.8}, 2),
    ("layernorm_scaling", {}, 2),
    ("layernorm_scaling", {"base": "rmsnorm", "eps": 1e-6}, 2),
    ("layernorm_scaling", {"elementwise_affine": False}, 2),
    ("groupnorm", {"num_groups": 2}, 2),
    ("groupnorm", {"num_groups": 1, "affine": False}, 2),
    ("instancenorm", {}, 2),
    ("instancenorm", {"affine": True}, 2),
    ("grn", {}, 2),
    ("identity", {}, 1),
    ("batchnorm", {}, 3),
    ("batchnorm", {"momentum": None}, 3),
    ("batchnorm", {"track_running_stats": False}, 2),
    ("batchnorm", {"affine": False}, 2),
    ("batchnorm", {"affine": False, "track_running_stats": False}, 2),
    ("repbn", {}, 3),
    ("prepbn", {"total_steps": 3, "warmup_steps": 1}, 5),
    ("bcn", {"num_groups": 2}, 3),
    ("evonorm_b0", {}, 3),
    ("evonorm_s0", {"num_groups": 2}, 2),
    ("powernorm", {"group_num": 2, "warmup_iters": 2}, 4),
    ("unifiednorm", {"window_size": 2, "warmup_iters": 2}, 5),
    ("unifiednorm", {"window_size": (2, 3), "warmup_iters": 2, "outlier_filtration": True}, 6),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for n, o, _ in CASES]


def rel_err(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    """max |a - b| relative to the reference's largest magnitude (0 when both are None)."""
    if a is None or b is None:
        assert a is None and b is None, "one path produced a gradient the other did not"
        return 0.0
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def pair(name: str, options: dict, dtype=torch.float32, layout=None):
    """The reference (fast paths off) and an identical copy with fast paths on, random parameters.

    The reference module carries ``oracle``: its float64 copy, run alongside it by ``compare``.
    """
    ref = normlight.create_norm(name, C, layer_idx=2, num_layers=4, layout=layout, dtype=dtype, **options)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=dtype))
    fast_m = copy.deepcopy(ref)
    assert fast.set_fast_norms(ref, False) >= 1 or name == "identity"
    oracles[id(ref)] = copy.deepcopy(ref).double()
    return ref, fast_m


oracles: dict = {}


def takes_mask(m) -> bool:
    inner = getattr(m, "norm", m) if type(m).__name__ == "ChannelsFirst" else m
    return "mask" in inspect.signature(inner.forward).parameters


def step(m, x, dy, mask):
    xg = x.clone().requires_grad_()
    y = m(xg) if mask is None else m(xg, mask=mask)
    y.backward(dy)
    return y.detach(), xg.grad


def check(what: str, f, r, r64, tol: float) -> None:
    """``f`` (fast) within ``tol`` of ``r`` (reference), or as close to ``r64`` (float64 reference) as ``r`` is."""
    err = rel_err(f, r)
    if err <= tol:
        return
    err_f, err_r = rel_err(f, r64), rel_err(r, r64)
    assert err_f <= 4 * err_r, (
        f"{what}: fast differs from the reference by {err:.2e} ({err_f:.2e} vs {err_r:.2e} from float64)"
    )


def compare(ref, fst, batches, tol):
    ref64 = oracles[id(ref)]
    for module in (ref, ref64):
        module.train(fst.training)
    for i, (x, dy, mask) in enumerate(batches):
        y_r, dx_r = step(ref, x, dy, mask)
        y_f, dx_f = step(fst, x, dy, mask)
        y_64, dx_64 = step(ref64, x.double(), dy.double(), mask)
        check(f"step {i} output", y_f, y_r, y_64, tol)
        check(f"step {i} input gradient", dx_f, dx_r, dx_64, tol)
    named = zip(ref.named_parameters(), fst.named_parameters(), ref64.parameters())
    for (name, p_r), (_, p_f), p_64 in named:
        check(f"gradient of {name}", p_f.grad, p_r.grad, p_64.grad, tol)
    for (name, b_r), (_, b_f), b_64 in zip(ref.named_buffers(), fst.named_buffers(), ref64.buffers()):
        if b_r.is_floating_point():
            check(f"buffer {name}", b_f, b_r, b_64, tol)
        else:
            assert torch.equal(b_f, b_r), f"buffer {name}: {b_f} != {b_r}"
    check(
        "batch_stat",
        getattr(fst, "batch_stat", None),
        getattr(ref, "batch_stat", None),
        getattr(ref64, "batch_stat", None),
        tol,
    )


def batches(shape, steps, masked, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(steps):
        x = (torch.randn(shape, generator=g) * (1 + i) + 0.5).to(dtype)
        dy = torch.randn(shape, generator=g).to(dtype)
        mask = None
        if masked:
            mask = torch.rand(shape[:-1], generator=g) > 0.3
            mask.view(-1)[:3] = True  # at least a few real tokens
        out.append((x, dy, mask))
    return out


@pytest.mark.parametrize("name,options,steps", CASES, ids=IDS)
def test_fast_path_equals_reference_train_then_eval(name, options, steps):
    ref, fst = pair(name, options)
    compare(ref, fst, batches((3, 5, C), steps, masked=False), 1e-5)
    fst.eval()
    compare(ref, fst, batches((2, 4, C), 1, masked=False, seed=7), 1e-5)


@pytest.mark.parametrize(
    "name,options,steps", [c for c in CASES if takes_mask(normlight.create_norm(c[0], C, layer_idx=2, **c[1]))]
)
def test_fast_path_equals_reference_with_padding_mask(name, options, steps):
    ref, fst = pair(name, options)
    compare(ref, fst, batches((3, 5, C), steps, masked=True), 1e-5)
    fst.eval()
    compare(ref, fst, batches((2, 4, C), 1, masked=True, seed=7), 1e-5)


@pytest.mark.parametrize("name", ["rmsnorm", "dyt", "groupnorm", "grn", "bcn", "batchnorm", "evonorm_b0"])
def test_fast_path_equals_reference_channels_first(name):
    options = {"num_groups": 2} if name in ("groupnorm", "bcn") else {}
    ref, fst = pair(name, options, layout="channels_first")
    compare(ref, fst, batches((2, C, 3, 3), 2, masked=False), 1e-5)


@pytest.mark.parametrize("name", ["rmsnorm", "dyt", "groupnorm", "repbn", "powernorm", "evonorm_s0"])
def test_fast_path_bf16_inputs_match_reference(name):
    options = {"num_groups": 2} if name in ("groupnorm", "evonorm_s0") else {}
    ref, fst = pair(name, options)
    compare(ref, fst, batches((3, 5, C), 2, masked=False, dtype=torch.bfloat16), 1e-2)


def test_groupnorm_fast_path_is_accurate_far_from_zero():
    # torch's channels_last group_norm kernel takes a one-pass variance (7e-2 off at |mean|/std = 200);
    # the fast path shifts by the exact group mean first
    x = torch.randn(2, 64, 16, generator=torch.Generator().manual_seed(3)) + 200
    m = normlight.create_norm("groupnorm", 16, num_groups=4)
    want = torch.nn.functional.group_norm(x.double().movedim(-1, 1), 4).movedim(1, -1)
    with torch.no_grad():
        assert float((m(x).double() - want).abs().max()) < 1e-4


# float64 gradcheck of the fast paths whose backward is the exact gradient (not PowerNorm / UN,
# whose backwards are the papers' approximations, checked against the reference above)
GRADCHECK = [
    ("rmsnorm", {"bias": True}),
    ("crmsnorm", {"elementwise_affine": True}),
    ("scalenorm", {}),
    ("l2norm", {}),
    ("dyt", {}),
    ("layernorm_scaling", {"base": "rmsnorm"}),
    ("groupnorm", {"num_groups": 2}),
    ("instancenorm", {"affine": True}),
    ("grn", {}),
    ("batchnorm", {"track_running_stats": False}),
    ("repbn", {}),
    ("bcn", {"num_groups": 2}),
    ("evonorm_b0", {}),
    ("evonorm_s0", {"num_groups": 2}),
]


@pytest.mark.parametrize("name,options", GRADCHECK, ids=[n for n, _ in GRADCHECK])
def test_fast_path_backward_is_the_exact_gradient(name, options):
    _, m = pair(name, options, dtype=torch.float64)
    params = [p for p in m.parameters()]
    x = torch.randn(2, 3, C, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) + 0.3
    x.requires_grad_()

    assert torch.autograd.gradcheck(lambda x: m(x), (x,), eps=1e-6, atol=1e-7, rtol=1e-5)
    for p in params:
        assert torch.autograd.gradcheck(lambda *_: m(x.detach()), (p,), eps=1e-6, atol=1e-7, rtol=1e-5), (
            f"parameter gradient of {name}"
        )


def test_fast_path_is_used_and_can_be_turned_off():
    m = normlight.create_norm("rmsnorm", C)
    x = torch.randn(2, 3, C, requires_grad=True)
    assert "RMSNormFunction" in type(m(x).grad_fn).__name__
    assert fast.set_fast_norms(m, False) == 1
    assert "RMSNormFunction" not in type(m(x).grad_fn).__name__


BATCH_FAST = [
    ("batchnorm", {}),
    ("evonorm_b0", {}),
    ("powernorm", {"group_num": 2, "warmup_iters": 1}),
    ("unifiednorm", {"window_size": 2, "warmup_iters": 1}),
]


# the fast paths with more than one learnable tensor
FROZEN = BATCH_FAST + [
    ("repbn", {}),
    ("rmsnorm", {"bias": True}),
    ("dyt", {}),
    ("groupnorm", {"num_groups": 2}),
    ("grn", {}),
    ("evonorm_s0", {"num_groups": 2}),
]


@pytest.mark.parametrize("name,options", FROZEN, ids=[n for n, _ in FROZEN])
def test_fast_path_with_one_parameter_frozen(name, options):
    """Each learnable tensor frozen in turn: the others still get the reference gradient, the frozen one none."""
    norm = normlight.create_norm(name, C, **options)
    for frozen in [n for n, _ in norm.named_parameters()]:
        # batchnorm: torch's fused kernel without a mask, normlight's with one
        for masked in (False, True) if takes_mask(norm) else (False,):
            ref, fst = pair(name, options)
            for m in (ref, fst, oracles[id(ref)]):
                dict(m.named_parameters())[frozen].requires_grad_(False)
            compare(ref, fst, batches((4, 3, C), 3, masked=masked), 1e-5)
            assert dict(fst.named_parameters())[frozen].grad is None


@pytest.mark.parametrize("name,options", BATCH_FAST, ids=[n for n, _ in BATCH_FAST])
def test_fast_path_rejects_the_batches_the_reference_rejects(name, options):
    """One row (too few values for a batch variance, where the norm needs two) and an all-padding batch."""
    ref, fst = pair(name, options)
    masked_out = (torch.randn(2, 3, C), torch.zeros(2, 3, dtype=torch.bool))
    cases = [((torch.randn(1, 1, C),), {})] if name in ("batchnorm", "evonorm_b0") else []
    cases.append(((masked_out[0],), {"mask": masked_out[1]}))
    for args, kwargs in cases:
        with pytest.raises(ValueError) as want:
            ref(*args, **kwargs)
        with pytest.raises(ValueError) as got:
            fst(*args, **kwargs)
        assert str(got.value) == str(want.value) and str(got.value).startswith(name.split("_")[0])
    if name in ("powernorm", "unifiednorm"):  # a per-row statistic: one real token is enough
        one = torch.zeros(2, 3, dtype=torch.bool)
        one[1, 2] = True
        x = torch.randn(2, 3, C)
        torch.testing.assert_close(fst(x, mask=one), ref(x, mask=one))
