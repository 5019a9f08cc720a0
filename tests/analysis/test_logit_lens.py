"""Logit lens: the read-out after the last layer is the model's own loss; earlier layers read h_l."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from normlight.analysis import analyze
from tests.analysis.models import image_batches, lm_batches, streams, tiny_gpt, tiny_vit


def _loss(logits, y):
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")), y.numel()


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_last_layer_lens_equals_the_model_loss(placement, one_thread):
    model = tiny_gpt(placement)
    batches = lm_batches()
    res = analyze(model, batches, ["logit_lens"])["logit_lens"]
    with torch.no_grad():
        terms = [_loss(model(x), y) for x, y in batches]
        lens1 = [_loss(model.head(model.norm(streams(model, x)[1])), y) for x, y in batches]
    assert res.scalars["final/loss"] == pytest.approx(sum(t[0] for t in terms) / sum(t[1] for t in terms), rel=1e-6)
    assert res.series["loss/lens"].values[-1] == res.scalars["final/loss"]
    assert res.series["loss/lens"].values[1] == pytest.approx(sum(t[0] for t in lens1) / sum(t[1] for t in lens1))
    assert len(res.series["loss/lens"].values) == 5


def test_vit_lens_reads_through_the_pooling(one_thread):
    model = tiny_vit(pool="mean")
    batches = image_batches()
    res = analyze(model, batches, ["logit_lens"])["logit_lens"]
    with torch.no_grad():
        terms = [_loss(model(x), y) for x, y in batches]
    assert res.scalars["final/loss"] == pytest.approx(sum(t[0] for t in terms) / sum(t[1] for t in terms), rel=1e-6)
