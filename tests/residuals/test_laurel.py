"""LAuReL variants against the paper's formulas (numpy)."""

import numpy as np
import pytest
import torch

import normlight

G = torch.Generator().manual_seed(0)
X, F = torch.randn(2, 3, 8, generator=G, dtype=torch.float64), torch.randn(2, 3, 8, generator=G, dtype=torch.float64)


def build(variant, **kw):
    r = normlight.create_residual("laurel", 8, site="attn", variant=variant, rank=2, **kw).double()
    with torch.no_grad():
        for p in r.parameters():
            p.copy_(torch.randn(p.shape, generator=G, dtype=torch.float64))
    return r


def test_rw_is_alpha_f_plus_beta_x():
    r = build("rw")
    a, b = r.alpha.item(), r.beta.item()
    np.testing.assert_allclose(r(X, F).detach().numpy(), a * F.numpy() + b * X.numpy(), rtol=1e-12)
    assert set(r.diagnostics()) == {"alpha", "beta"}


def test_lr_adds_a_low_rank_term():
    r = build("lr")
    A, B = r.A.detach().numpy(), r.B.detach().numpy()
    x = X.numpy()
    np.testing.assert_allclose(r(X, F).detach().numpy(), F.numpy() + x + x @ A.T @ B.T, rtol=1e-12)


def test_rw_lr_combines_both():
    r = build("rw_lr")
    A, B, a, b = r.A.detach().numpy(), r.B.detach().numpy(), r.alpha.item(), r.beta.item()
    x = X.numpy()
    np.testing.assert_allclose(r(X, F).detach().numpy(), a * F.numpy() + b * (x + x @ A.T @ B.T), rtol=1e-12)


@pytest.mark.parametrize("variant", ["rw", "lr", "rw_lr"])
def test_every_variant_starts_as_the_plain_residual(variant):
    r = normlight.create_residual("laurel", 8, site="mlp", variant=variant).double()
    torch.testing.assert_close(r(X, F), X + F)


def test_bad_options_are_named():
    with pytest.raises(normlight.PluginOptionError, match="variant must be one of"):
        normlight.create_residual("laurel", 8, site="attn", variant="pa")
