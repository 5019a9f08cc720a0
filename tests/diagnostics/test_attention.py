"""Attention entropy (normalized for causal masks) on known attention patterns and against numpy."""

import math

import numpy as np
import pytest
import torch

from normlight.diagnostics import (
    attention,
)

# ---------------------------------------------------------------- loss spikes


def test_uniform_attention_has_normalized_entropy_one():
    t = 6
    causal = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1).unsqueeze(1)  # uniform over visible keys
    probs = causal.expand(2, 3, t, t)
    assert attention.normalized_entropy(probs, causal=True).tolist() == pytest.approx([1.0] * 3)
    full = torch.full((2, 3, t, t), 1.0 / t)
    assert attention.normalized_entropy(full, causal=False).tolist() == pytest.approx([1.0] * 3)


def test_one_hot_attention_has_entropy_zero_and_random_matches_numpy():
    t = 5
    onehot = torch.eye(t).expand(1, 2, t, t)  # each query attends only to itself (causal-valid)
    assert attention.normalized_entropy(onehot, causal=True).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    logits = torch.randn(2, 2, t, t).masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), -math.inf)
    p = logits.softmax(-1).numpy()
    ref = []
    for h in range(2):
        vals = []
        for b in range(2):
            for i in range(1, t):
                row = p[b, h, i, : i + 1]
                vals.append(-(row * np.log(row)).sum() / np.log(i + 1))
        ref.append(np.mean(vals))
    assert attention.normalized_entropy(torch.from_numpy(p), causal=True).tolist() == pytest.approx(ref, rel=1e-5)
