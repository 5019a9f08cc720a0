"""Block Influence against an independent numpy formula; an identity block has BI 0 (ShortGPT)."""

from __future__ import annotations

import numpy as np
import pytest

from normlight.analysis import analyze
from tests.analysis.models import lm_batches, make_identity, streams, tiny_gpt


def _bi_numpy(pairs) -> float:
    cos = []
    for a, b in pairs:
        a, b = a.reshape(-1, a.shape[-1]).double().numpy(), b.reshape(-1, b.shape[-1]).double().numpy()
        cos.append((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)))
    return 1.0 - float(np.concatenate(cos).mean())


def test_bi_matches_numpy_and_an_identity_block_has_bi_zero(one_thread):
    model = tiny_gpt()
    make_identity(model.blocks[2])
    batches = lm_batches()
    res = analyze(model, batches, ["block_influence"])["block_influence"]
    hs = [streams(model, x) for x, _ in batches]
    for i in range(4):
        assert res.series["bi/block"].values[i] == pytest.approx(_bi_numpy([(h[i], h[i + 1]) for h in hs]), abs=1e-6)
    assert abs(res.series["bi/block"].values[2]) < 1e-6
    assert min(res.series["bi/block"].values[:2] + res.series["bi/block"].values[3:]) > 1e-3
    assert res.scalars["lowest_block"] == 2
    assert abs(res.series["bi/attn"].values[2]) < 1e-6 and abs(res.series["bi/mlp"].values[2]) < 1e-6


def test_sublayer_bi_of_a_pre_ln_block_splits_at_the_mid_stream(one_thread):
    model = tiny_gpt()
    batches = lm_batches()
    res = analyze(model, batches, ["block_influence"])["block_influence"]
    pairs_attn, pairs_mlp = [], []
    for x, _ in batches:
        h = streams(model, x)
        blk = model.blocks[1]
        mid = (h[1] + blk.attn(blk.norm1(h[1]))).detach()  # Pre-LN: the stream between attention and MLP
        pairs_attn.append((h[1], mid))
        pairs_mlp.append((mid, h[2]))
    assert res.series["bi/attn"].values[1] == pytest.approx(_bi_numpy(pairs_attn), abs=1e-6)
    assert res.series["bi/mlp"].values[1] == pytest.approx(_bi_numpy(pairs_mlp), abs=1e-6)
