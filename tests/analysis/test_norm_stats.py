"""Norm statistics: the norms of a model are found, gains summarized, and batch-statistic norms get a train/eval gap."""

from __future__ import annotations

import pytest
import torch

from normlight.analysis import analyze
from normlight.analysis.norm_stats import norm_modules
from tests.analysis.models import lm_batches, tiny_gpt, tiny_vit


def test_finds_every_norm_and_counts_zero_gains(one_thread):
    model = tiny_gpt("peri")
    assert [n for n, _ in norm_modules(model)][:4] == [
        "blocks.0.norm1",
        "blocks.0.norm2",
        "blocks.0.attn_out_norm",
        "blocks.0.mlp_out_norm",
    ]
    assert len(norm_modules(model)) == 4 * 4 + 1
    with torch.no_grad():
        model.blocks[3].norm2.weight[:16].zero_()  # 16 of the 17 * 32 gain entries
        model.blocks[1].norm1.weight.fill_(2.0)
    res = analyze(model, lm_batches(), ["norm_stats"])["norm_stats"]
    assert res.scalars["norms"] == 17
    assert res.scalars["gain_near_zero"] == pytest.approx(16 / (17 * 32))
    assert res.series["gain/norm1"].values == pytest.approx([1.0, 2.0, 1.0, 1.0])
    assert res.series["gain/norm2"].values[3] == pytest.approx(0.5)
    assert "train_eval_gap" not in res.scalars


def test_batch_statistic_norm_gap(one_thread):
    model = tiny_vit(norm="batchnorm")
    x = torch.randn(8, 1, 8, 8) * 3 + 1
    batches = [(x, torch.randint(0, 5, (8,)))]
    res = analyze(model, batches, ["norm_stats"])["norm_stats"]
    train_mode = [m for _, m in norm_modules(model) if getattr(m, "uses_batch_statistics", False)]
    assert train_mode and all(not m.training for m in train_mode)  # the model itself stays in eval mode
    assert res.scalars["train_eval_gap"] == pytest.approx(res.scalars["train_mode/loss"] - _eval_loss(model, batches))
    assert abs(res.scalars["train_eval_gap"]) > 1e-4  # fresh running stats (0, 1) vs batch stats of shifted data
    rows = [r for r in res.tables["tensors"] if r["tensor"] == "running_var"]
    assert rows and rows[0]["kind"] == "buffer"


def _eval_loss(model, batches):
    with torch.no_grad():
        x, y = batches[0]
        return float(torch.nn.functional.cross_entropy(model(x), y))
