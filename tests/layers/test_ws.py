"""Weight standardization and Scaled WS (NF-ResNets) against numpy (norms.md 10)."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from normlight.layers.ws import ScaledWSConv2d, WSConv2d

# ---------------------------------------------------------------- Fixup (norms.md 9a)


def scaled_ws_numpy(w, gain, eps=1e-4):
    w = w.astype(np.float64)
    n = w[0].size
    mean = w.reshape(w.shape[0], -1).mean(1)[:, None, None, None]
    var = w.reshape(w.shape[0], -1).var(1)[:, None, None, None]  # biased
    return gain * (w - mean) / np.sqrt(np.maximum(n * var, eps))


def test_scaled_ws_matches_numpy_and_has_unit_norm_times_gain():
    torch.manual_seed(0)
    conv = ScaledWSConv2d(6, 5, 3, padding=1)
    with torch.no_grad():
        conv.gain.copy_(torch.rand(5, 1, 1, 1) + 0.5)
        conv.bias.copy_(torch.randn(5))
    w_hat = conv.standardized_weight().detach().numpy()
    expected = scaled_ws_numpy(conv.weight.detach().numpy(), conv.gain.detach().numpy())
    np.testing.assert_allclose(w_hat, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w_hat.reshape(5, -1).mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(
        np.linalg.norm(w_hat.reshape(5, -1), axis=1), conv.gain.detach().numpy().ravel(), rtol=1e-5
    )
    x = torch.randn(2, 6, 7, 7)
    ref = F.conv2d(x, torch.from_numpy(expected).float(), conv.bias, padding=1)
    torch.testing.assert_close(conv(x), ref, rtol=1e-4, atol=1e-5)


def test_scaled_ws_eps_is_a_clamp_not_added():
    conv = ScaledWSConv2d(4, 1, 1)
    a = 5e-4  # fan-in 4, values +-a: N * var = 4 a^2 = 1e-6 < eps = 1e-4
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([a, -a, a, -a]).view(1, 4, 1, 1))
    w_hat = conv.standardized_weight().detach().numpy().ravel()
    np.testing.assert_allclose(np.abs(w_hat), a / math.sqrt(1e-4), rtol=1e-5)  # clamp: 0.05
    assert not np.allclose(np.abs(w_hat), a / math.sqrt(1e-6 + 1e-4), rtol=1e-4)  # additive eps: 0.04975


def test_ws_unbiased_unit_std_numpy():
    torch.manual_seed(1)
    conv = WSConv2d(3, 4, 3, padding=1, bias=False)
    w = conv.weight.detach().numpy().astype(np.float64).reshape(4, -1)
    expected = (w - w.mean(1, keepdims=True)) / np.sqrt(w.var(1, ddof=1, keepdims=True) + 1e-5)
    got = conv.standardized_weight().detach().numpy().reshape(4, -1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.std(1, ddof=1), 1.0, rtol=1e-3)
    assert not np.allclose(got.std(1, ddof=0), 1.0, rtol=1e-3)  # biased var is the close-but-wrong variant
