"""Effective rank, prompt entropy and dormant fraction against numpy; the profile has one value per layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from normlight.analysis import analyze
from normlight.analysis.representations import dormant_fraction, effective_rank, prompt_entropy
from tests.analysis.models import lm_batches, streams, tiny_gpt


def _erank_numpy(z):
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_effective_rank_of_an_orthonormal_basis_is_its_size():
    q, _ = torch.linalg.qr(torch.randn(20, 7, dtype=torch.float64))
    assert effective_rank(q.T, center=False) == pytest.approx(7.0, abs=1e-9)
    assert effective_rank(3.0 * q.T[:4], center=False) == pytest.approx(4.0, abs=1e-9)


def test_effective_rank_and_prompt_entropy_match_numpy():
    z = torch.randn(50, 12) * torch.linspace(0.1, 3.0, 12)
    zc = (z - z.mean(0)).double().numpy()
    assert effective_rank(z) == pytest.approx(_erank_numpy(zc), rel=1e-9)
    s2 = np.linalg.svd(z.double().numpy(), compute_uv=False) ** 2
    lam = s2 / s2.sum()
    assert prompt_entropy(z) == pytest.approx(float(-(lam * np.log(lam)).sum()), rel=1e-9)


def test_dormant_fraction_matches_the_definition():
    mean_abs = torch.tensor([1.0, 1.0, 1.0, 0.01, 0.0, 1.0])  # mean 0.6683: scores 0.015 and 0 are <= 0.025
    assert dormant_fraction(mean_abs, 0.025) == pytest.approx(2 / 6)
    assert dormant_fraction(mean_abs, 0.0) == pytest.approx(1 / 6)


def test_profile_on_a_gpt(one_thread):
    model = tiny_gpt()
    with torch.no_grad():  # make half of block 1's MLP units dead: their fc1 rows give large negative pre-activations
        model.blocks[1].mlp.fc1.weight[:64].zero_()
        model.blocks[1].mlp.fc1.bias[:64].fill_(-30.0)
    batches = lm_batches()
    res = analyze(model, batches, ["representations"])["representations"]
    assert len(res.series["erank"].values) == 5 and len(res.series["dormant"].values) == 4
    assert res.series["dormant"].values[1] == pytest.approx(0.5)
    assert res.series["dormant"].values[0] < 0.1
    hs = [streams(model, x) for x, _ in batches]
    rms2 = np.sqrt(np.mean(np.concatenate([h[2].double().numpy().ravel() for h in hs]) ** 2))
    assert res.series["rms"].values[2] == pytest.approx(rms2, rel=1e-5)
    ent = res.series["attn_entropy"].values
    assert all(0.0 < v <= 1.0 for v in ent)
