"""Parameter-free poolings against numpy: cls, mean, max, last_token, weighted_mean (SGPT position weights)."""

import numpy as np
import pytest
import torch

import normlight

X = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
XN = X.numpy()


@pytest.mark.parametrize(
    "name, want",
    [
        ("cls", XN[:, 0]),
        ("mean", XN.mean(axis=1)),
        ("max", XN.max(axis=1)),
        ("last_token", XN[:, -1]),
        ("weighted_mean", np.einsum("t,btd->bd", np.arange(1, 6) / 15.0, XN)),
    ],
)
def test_matches_numpy(name, want):
    pool = normlight.create_pooling(name, 8)
    np.testing.assert_allclose(pool(X).numpy(), want, rtol=1e-12, atol=1e-12)


def test_declared_norm_positions_follow_timm_and_the_class_token():
    decl = {n: normlight.create_pooling(n, 8) for n in ("cls", "mean", "max", "last_token", "weighted_mean")}
    assert {n: p.norm_position for n, p in decl.items()} == {
        "cls": "pre",
        "mean": "post",
        "max": "post",
        "last_token": "pre",
        "weighted_mean": "pre",
    }
    assert decl["cls"].uses_class_token and not decl["mean"].uses_class_token
    assert normlight.create_pooling("mean", 8, norm_position="pre").norm_position == "pre"
    with pytest.raises(normlight.PluginOptionError, match="norm_position must be one of"):
        normlight.create_pooling("mean", 8, norm_position="middle")
