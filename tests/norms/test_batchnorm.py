"""BatchNorm on tokens and maps as in Ioffe & Szegedy / torch's documented semantics: statistics, masks,
running estimates, micro-batch errors, half precision, state."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

import normlight
from normlight.layers.layout import ChannelsFirst
from normlight.norms.batchnorm import BatchNorm
from tests.norms.reference import np_bn_train, rand


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
