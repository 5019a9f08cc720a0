"""Angular distance d(l, l+n) = arccos(cos)/pi at the last token, against numpy; identity block -> 0 and best span."""

from __future__ import annotations

import numpy as np
import pytest

from normlight.analysis import analyze
from tests.analysis.models import lm_batches, make_identity, streams, tiny_gpt


def test_distance_matrix_matches_numpy_and_finds_the_identity_block(one_thread):
    model = tiny_gpt()
    make_identity(model.blocks[1])
    batches = lm_batches()
    res = analyze(model, batches, ["angular_distance"])["angular_distance"]
    last = [np.concatenate([streams(model, x)[l][:, -1].double().numpy() for x, _ in batches]) for l in range(5)]
    dist = res.matrices["distance"].values
    for l in range(4):
        for n in range(1, 5 - l):
            a, b = last[l], last[l + n]
            cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
            assert dist[l][n - 1] == pytest.approx(float(np.mean(np.arccos(np.clip(cos, -1, 1)) / np.pi)), abs=1e-6)
        assert all(np.isnan(dist[l][n - 1]) for n in range(5 - l, 5))
    assert dist[1][0] < 1e-6
    assert res.series["best_start"].values[0] == 1 and res.scalars["best_start/n1"] == 1
    assert res.series["best_distance"].values[0] == dist[1][0]
