"""BatchNorm on tokens and maps as in Ioffe & Szegedy / torch's documented semantics: statistics, masks,
running estimates, micro-batch errors, half precision, state."""

from __future__ import annotations

import copy
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import normlight
from normlight.layers.layout import ChannelsFirst
from normlight.norms import _batchstats as bs
from normlight.norms.batchnorm import BatchNorm
from normlight.norms.repbn import RepBN
from tests.norms.reference import np_bn_train, rand

NORMS_DIR = Path(bs.__file__).resolve().parent


def test_batchnorm_init_and_flags():
    m = normlight.create_norm("batchnorm", 6)
    assert m.uses_batch_statistics is True
    assert torch.equal(m.weight, torch.ones(6)) and torch.equal(m.bias, torch.zeros(6))
    assert torch.equal(m.running_mean, torch.zeros(6)) and torch.equal(m.running_var, torch.ones(6))
    assert (m.eps, m.momentum) == (1e-5, 0.1)


def test_batchnorm_tokens_train_eval_and_running_stats_match_numpy():
    m = BatchNorm(6)
    with torch.no_grad():
        m.weight.copy_(rand(6, seed=1) + 1)
        m.bias.copy_(rand(6, seed=2))
    w, b = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
    rm, rv = np.zeros(6), np.ones(6)
    for step in range(3):
        x = rand(4, 5, 6, seed=10 + step, scale=2.0, shift=3.0)
        xn = x.double().numpy()
        z, mean, var, n = np_bn_train(xn)
        y = m(x)
        np.testing.assert_allclose(y.detach().numpy(), w * z + b, rtol=1e-5, atol=1e-5)
        rm = 0.9 * rm + 0.1 * mean
        rv = 0.9 * rv + 0.1 * var * n / (n - 1)  # unbiased for the running estimate
        np.testing.assert_allclose(m.running_mean.numpy(), rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.running_var.numpy(), rv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.batch_stat.numpy(), var, rtol=1e-4, atol=1e-6)  # biased, as normalized
    assert m.running_stat is m.running_var
    m.eval()
    x = rand(3, 5, 6, seed=99)
    want = w * (x.double().numpy() - rm) / np.sqrt(rv + 1e-5) + b
    np.testing.assert_allclose(m(x).detach().numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("via", ["layout", "adapter"])
def test_batchnorm_channels_first_equals_torch_batchnorm2d(via, momentum):
    if via == "layout":
        m = normlight.create_norm("batchnorm", 5, layout="channels_first", momentum=momentum)
    else:
        m = ChannelsFirst(BatchNorm(5, momentum=momentum))
    ref = torch.nn.BatchNorm2d(5, momentum=momentum)
    with torch.no_grad():
        for p, q in zip(m.parameters(), ref.parameters()):
            p.copy_(rand(*p.shape, seed=3) + 1)
            q.copy_(p)
    for step in range(3):
        x = rand(4, 5, 3, 3, seed=20 + step, scale=1.5, shift=-1.0)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = m(xa), ref(xb)
        torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-6)
        (ya * rand(*x.shape, seed=7)).sum().backward()
        (yb * rand(*x.shape, seed=7)).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
    bn = m if via == "layout" else m.norm
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(bn, name), getattr(ref, name), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(bn.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    m.eval(), ref.eval()
    x = rand(2, 5, 4, 4, seed=30)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-6)


def test_batchnorm_mask_excludes_padding_from_statistics():
    x = rand(3, 4, 6, seed=4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 2:] = False
    mask[2, 3] = False
    garbage = x.clone()
    garbage[~mask] = 1e3  # padded tokens must not move the statistics
    m1, m2 = BatchNorm(6), BatchNorm(6)
    y1, y2 = m1(x, mask=mask), m2(garbage, mask=mask)
    torch.testing.assert_close(y1[mask], y2[mask])
    real = x[mask].double().numpy()
    z, mean, var, n = np_bn_train(real)
    np.testing.assert_allclose(y1[mask].detach().numpy(), z, rtol=1e-5, atol=1e-5)
    # padded positions are still normalized with the same statistics
    np.testing.assert_allclose(
        y2[~mask].detach().numpy(), np.broadcast_to((1e3 - mean) / np.sqrt(var + 1e-5), (3, 6)), rtol=1e-5
    )
    torch.testing.assert_close(m1.running_var, m2.running_var)
    np.testing.assert_allclose(m1.running_var.numpy(), 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)
    np.testing.assert_allclose(m1.running_mean.numpy(), 0.1 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m1.batch_stat.numpy(), var, rtol=1e-5)


def test_batchnorm_micro_batch_error_and_one_sample_warning():
    m = BatchNorm(4)
    with pytest.raises(ValueError, match=r"batchnorm.*more than 1 value.*groupnorm.*bcn.*evonorm_s0.*nf"):
        m(rand(1, 4))
    with pytest.warns(UserWarning, match="batch size 1"):
        y = m(rand(1, 6, 4))
    ref = torch.nn.BatchNorm1d(4)
    torch.testing.assert_close(y, ref(rand(1, 6, 4).transpose(1, 2)).transpose(1, 2), rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one-time warning: the second call is silent
        m(rand(1, 6, 4))
    m.eval()
    m(rand(1, 4))  # eval uses running statistics: batch size 1 is fine


def test_batchnorm_without_running_stats_and_affine():
    m = BatchNorm(3, affine=False, track_running_stats=False)
    assert m.weight is None and m.running_var is None
    m.eval()  # still batch statistics, as torch
    x = rand(4, 2, 3, seed=5)
    np.testing.assert_allclose(m(x).numpy(), np_bn_train(x.double().numpy())[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_batchnorm_half_and_float64_paths(half):
    x = rand(4, 5, 6, seed=6, scale=3.0, shift=2.0)
    m = BatchNorm(6)
    y = m(x.to(half))
    assert y.dtype == half
    torch.testing.assert_close(y.float(), BatchNorm(6)(x.to(half).float()), rtol=2e-2, atol=2e-2)
    mask = torch.ones(4, 5, dtype=torch.bool)
    assert m(x.to(half), mask=mask).dtype == half and m.batch_stat.dtype == torch.float32
    assert m.running_var.dtype == torch.float32 and torch.isfinite(m.running_var).all()
    m64 = BatchNorm(6, dtype=torch.float64)
    x64 = x.double().requires_grad_()
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1, 3:] = False
    assert torch.autograd.gradcheck(lambda t: m64(t, mask=mask), (x64,))


def test_batchnorm_copy_pickle_state_dict():
    m = BatchNorm(4)
    m(rand(3, 2, 4))
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        torch.testing.assert_close(clone.running_var, m.running_var)
    fresh = BatchNorm(4)
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh.running_mean, m.running_mean)


def np_bn_channels_first(x_nchw, mask, w, b, eps):
    """Training BatchNorm of a channels-first map over its real positions (numpy, float64)."""
    xl = np.moveaxis(x_nchw, 1, -1)
    z, mean, var, n = np_bn_train(xl[mask] if mask is not None else xl, eps)
    y = (xl - mean) / np.sqrt(var + eps) * w + b
    return np.moveaxis(y, -1, 1), mean, var, n


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batchnorm_channels_first_mask_running_stats_and_eval_match_numpy(fast_path, dtype):
    # a channels-first map (N, C, H, W) with a padding mask (N, H, W), every size distinct; a float64
    # module on float32 input takes the general (non-fused) code also without a mask
    N, C, H, W, eps, mom = 2, 4, 3, 5, 0.1, 0.3
    m = BatchNorm(C, eps=eps, momentum=mom, layout="channels_first", dtype=dtype)
    normlight.set_fast_norms(m, fast_path)
    with torch.no_grad():
        m.weight.copy_(rand(C, seed=60) + 1)
        m.bias.copy_(rand(C, seed=61))
    w, b = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
    x = rand(N, C, H, W, seed=62, scale=2.0, shift=1.5)
    mask = torch.ones(N, H, W, dtype=torch.bool)
    mask[0, 2] = False
    mask[1, :, 3:] = False
    xn, mn = x.double().numpy(), mask.numpy()
    rm, rv = np.zeros(C), np.ones(C)
    for step, mk in enumerate([mask, None, mask]):
        want, mean, var, n = np_bn_channels_first(xn * (1 + step), None if mk is None else mn, w, b, eps)
        y = m(x * (1 + step), mask=mk)
        assert y.shape == x.shape and y.dtype == torch.float32
        np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-5, atol=1e-5)
        rm, rv = (1 - mom) * rm + mom * mean, (1 - mom) * rv + mom * var * n / (n - 1)
        np.testing.assert_allclose(m.running_mean.numpy(), rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.running_var.numpy(), rv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.batch_stat.numpy(), var, rtol=1e-5, atol=1e-6)
        assert int(m.num_batches_tracked) == step + 1
    m.eval()
    xl = np.moveaxis(xn, 1, -1)
    want = np.moveaxis((xl - rm) / np.sqrt(rv + eps) * w + b, -1, 1)
    for mk in (None, mask):  # eval: running statistics, the mask changes nothing
        np.testing.assert_allclose(m(x, mask=mk).detach().numpy(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fast_path", [True, False])
def test_batchnorm_without_affine_on_the_general_path(fast_path):
    # affine=False through the masked path and through a float64 module on float32 input (not fused)
    x = rand(3, 4, 5, seed=63, scale=2.0, shift=-1.0)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[2, 1:] = False
    for m, mk in ((BatchNorm(5, affine=False), mask), (BatchNorm(5, affine=False, dtype=torch.float64), None)):
        normlight.set_fast_norms(m, fast_path)
        real = x[mask] if mk is not None else x.reshape(-1, 5)
        z, mean, var, n = np_bn_train(real.double().numpy())
        y = m(x, mask=mk)
        np.testing.assert_allclose(y.detach().numpy(), (x.double().numpy() - mean) / np.sqrt(var + 1e-5), atol=1e-5)
        m.eval()
        want = (x.double().numpy() - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var * n / (n - 1) + 1e-5)
        np.testing.assert_allclose(m(x, mask=mk).detach().numpy(), want, rtol=1e-5, atol=1e-5)


def test_batchnorm_large_eps_enters_eval_and_batch_stat():
    # eps large enough to matter: eval divides by sqrt(running_var + eps); batch_stat is the biased batch
    # variance itself (not var + eps), also when it is below 1
    m = BatchNorm(3, eps=0.5)
    x = rand(4, 6, 3, seed=64, scale=0.1)
    z, mean, var, n = np_bn_train(x.double().numpy(), eps=0.5)
    np.testing.assert_allclose(m(x).detach().numpy(), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.batch_stat.numpy(), var, rtol=1e-4, atol=1e-7)
    m.eval()
    rm, rv = 0.1 * mean, 0.9 + 0.1 * var * n / (n - 1)
    want = (x.double().numpy() - rm) / np.sqrt(rv + 0.5)
    np.testing.assert_allclose(m(x).detach().numpy(), want, rtol=1e-5, atol=1e-5)


def test_batchnorm_bf16_input_is_normalized_with_float32_statistics():
    # values near 100: the bf16 grid there is 0.5 apart, so a mean formed in bf16 would be off by up to a
    # quarter of a standard deviation; float32 statistics keep the output within bf16 rounding
    x = (100 + rand(4, 6, 3, seed=65)).bfloat16()
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[3, 2:] = False
    for fast_path, mk in ((True, mask), (False, mask), (True, None)):
        m = BatchNorm(3)
        normlight.set_fast_norms(m, fast_path)
        y = m(x, mask=mk)
        assert y.dtype == torch.bfloat16
        real = mask.numpy() if mk is not None else np.ones(mask.shape, dtype=bool)
        z, mean, var, n = np_bn_train(x.double().numpy()[real])
        np.testing.assert_allclose(y.detach().double().numpy()[real], z, atol=3e-2)


def test_batchnorm_options_errors_and_warnings_name_the_norm():
    assert BatchNorm(4).sync_stats is True  # documented default: statistics summed across ranks
    assert BatchNorm(4).batch_stat is None  # nothing measured before the first training forward
    assert not BatchNorm(4, layout="channels_last").channels_first
    with pytest.raises(
        ValueError, match=r"^batchnorm: layout must be 'channels_last' or 'channels_first', got 'nchw'$"
    ):
        BatchNorm(4, layout="nchw")
    with pytest.raises(
        ValueError, match=r"^batchnorm: expected an input of shape \(\.\.\., C\) with C=4, got \(2, 3\)$"
    ):
        BatchNorm(4)(torch.randn(2, 3))
    for fast_path in (True, False):  # one real token: the error names the norm and the count
        m = BatchNorm(4)
        normlight.set_fast_norms(m, fast_path)
        one = torch.zeros(2, 3, dtype=torch.bool)
        one[0, 0] = True
        with pytest.raises(ValueError, match=r"^batchnorm: training needs more than 1 value per channel .* got 1 \("):
            m(torch.randn(2, 3, 4), mask=one)
    with pytest.raises(ValueError, match=r"^batchnorm: training needs more than 1 value per channel .* got 1 \("):
        BatchNorm(4)(torch.randn(1, 4))


def test_batchnorm_one_sample_warning_points_at_the_caller_and_not_in_eval():
    msg = (
        "batchnorm: training with batch size 1; the batch statistics come from one sample's positions and are "
        "noisy (" + bs.MICRO_BATCH_HINT + ")"
    )
    cases = [
        (BatchNorm(4), {}),
        (BatchNorm(4), {"mask": torch.ones(1, 6, dtype=torch.bool)}),
        (normlight.create_norm("repbn", 4), {}),
    ]
    for m, kwargs in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m(rand(1, 6, 4), **kwargs)
        label = "repbn" if isinstance(m, RepBN) else "batchnorm"  # repbn names itself, not its BatchNorm
        assert [str(w.message) for w in caught] == [msg.replace("batchnorm", label, 1)]
        # shown at the line that called the norm: not inside normlight's norms nor torch's Module.__call__
        # (compared by exclusion: a tool wrapping the functions, such as mutmut, adds frames of its own)
        where = Path(caught[0].filename).resolve()
        assert not where.is_relative_to(NORMS_DIR) and where != Path(torch.nn.modules.module.__file__).resolve()
    m = BatchNorm(4).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # eval uses running statistics: a single sample is fine, no warning
        m(rand(1, 6, 4))


def test_batchnorm_repr_shows_every_option():
    m = BatchNorm(
        4, eps=0.1, momentum=None, affine=False, track_running_stats=False, sync_stats=False, layout="channels_first"
    )
    assert m.extra_repr() == (
        "4, eps=0.1, momentum=None, affine=False, track_running_stats=False, sync_stats=False, layout=channels_first"
    )
    assert BatchNorm(4).extra_repr() == (
        "4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True, sync_stats=True, layout=channels_last"
    )


def test_batchnorm_stage_of_repbn_reports_its_batch_variance_and_refuses_one_row():
    # RepBN runs its BatchNorm through torch's fused kernel with alpha: batch_stat is the biased batch variance
    # itself (eps large and the variance below 1, so adding eps or a floor of 1 would show), and one row is
    # refused with BatchNorm's message, under repbn's name
    m = normlight.create_norm("repbn", 3, eps=0.5)
    x = rand(4, 6, 3, seed=66, scale=0.1)
    m(x)
    var = x.reshape(-1, 3).double().numpy().var(0)
    np.testing.assert_allclose(m.bn.batch_stat.numpy(), var, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match=r"^repbn: training needs more than 1 value per channel .* got 1 \("):
        m(torch.randn(1, 3))


def graph_nodes(y):
    """Names of the autograd nodes that produced ``y``."""
    seen, todo = set(), [y.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and type(node).__name__ not in seen:
            seen.add(type(node).__name__)
            todo += [n for n, _ in node.next_functions]
    return seen


def test_batchnorm_fast_switch_selects_the_implementation():
    # training with a mask takes the fast path's fused Function unless set_fast_norms(m, False); without a
    # mask torch's own batch-norm kernel serves (fast path or not)
    x = rand(3, 4, 5, seed=67).requires_grad_()
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 3] = False
    m = BatchNorm(5)
    assert any("BatchAffineFunction" in n for n in graph_nodes(m(x, mask=mask)))
    plain = graph_nodes(m(x))
    assert "NativeBatchNormBackward0" in plain and not any("BatchAffineFunction" in n for n in plain)
    normlight.set_fast_norms(m, False)
    assert not any("BatchAffineFunction" in n for n in graph_nodes(m(x, mask=mask)))
