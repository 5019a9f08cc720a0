"""Each diagnostic on a constructed case with a known answer, checked against independent numpy formulas."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from normlight.diagnostics import attention, batch_stats, block_influence, grad_norm, loss_spikes, residual, summary, throughput


# ---------------------------------------------------------------- loss spikes
def test_robust_zscore_matches_numpy():
    rng = np.random.default_rng(0)
    hist = list(rng.normal(2.0, 0.1, size=50))
    med = np.median(hist)
    mad = np.median(np.abs(np.asarray(hist) - med))
    assert loss_spikes.robust_zscore(hist, 3.0) == pytest.approx((3.0 - med) / (1.4826 * mad))


def test_spike_detector_on_synthetic_series():
    rng = np.random.default_rng(1)
    series = list(2.0 - 0.001 * np.arange(200) + rng.normal(0, 0.02, 200))
    spikes_at = {60, 120, 121, 180}
    for i in spikes_at:
        series[i] += 1.0  # about 50 robust standard deviations
    det = loss_spikes.SpikeDetector(window=50, threshold=6.0)
    flagged = {i for i, v in enumerate(series) if det.update(v)}
    assert flagged == spikes_at
    assert det.count == 4


def test_spike_detector_needs_history_and_ignores_drops():
    det = loss_spikes.SpikeDetector(window=10, threshold=3.0, min_history=5)
    assert not any(det.update(v) for v in [1.0, 50.0, 1.0, 1.0])  # too little history to judge
    det2 = loss_spikes.SpikeDetector(window=10, threshold=3.0, min_history=3)
    for v in [1.0, 1.1, 0.9, 1.0, 1.05]:
        det2.update(v)
    assert not det2.update(-100.0)  # a sudden drop is not a spike


def test_divergence_guard_records_first_step_only():
    g = loss_spikes.DivergenceGuard()
    assert not g.check(1.0, 3, "loss")
    assert g.check(float("inf"), 7, "loss")
    assert not g.check(float("nan"), 9, "gradient norm")
    assert (g.diverged, g.step) == (True, 7) and "loss" in g.reason


# ---------------------------------------------------------------- gradient norms
def test_grad_norms_on_known_gradients():
    # loss = sum(c_i * w_i) has gradient c_i exactly
    blocks = nn.ModuleList([nn.Linear(3, 2, bias=False), nn.Linear(2, 4, bias=False)])
    consts = [torch.randn_like(p) for p in blocks.parameters()]
    sum((c * p).sum() for c, p in zip(consts, blocks.parameters())).backward()
    want = [float(np.linalg.norm(c.numpy())) for c in consts]
    assert float(grad_norm.global_grad_norm(blocks.parameters())) == pytest.approx(math.hypot(*want), rel=1e-6)
    assert grad_norm.block_grad_norms(blocks)["block"] == pytest.approx(want, rel=1e-6)
    assert grad_norm.coefficient_of_variation(want) == pytest.approx(np.std(want) / np.mean(want))
    assert grad_norm.coefficient_of_variation([2.0, 2.0, 2.0]) == 0.0


# ---------------------------------------------------------------- attention entropy
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


# ---------------------------------------------------------------- block influence
def test_block_influence_identity_zero_negation_two_and_numpy():
    h = torch.randn(2, 7, 8)
    assert block_influence.block_influence(h, h.clone()) == pytest.approx(0.0, abs=1e-6)
    assert block_influence.block_influence(h, -h) == pytest.approx(2.0, abs=1e-6)
    g = torch.randn(2, 7, 8)
    a, b = h.numpy().reshape(-1, 8), g.numpy().reshape(-1, 8)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert block_influence.block_influence(h, g) == pytest.approx(1 - cos.mean(), rel=1e-5)
    # feature maps: channels are dim 1
    f, f2 = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    a = f.permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    b = f2.permute(0, 2, 3, 1).reshape(-1, 4).numpy()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert block_influence.block_influence(f, f2) == pytest.approx(1 - cos.mean(), rel=1e-5)


def test_probe_block_influence_on_identity_and_scaling_blocks():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Identity(), nn.Linear(4, 4), nn.Identity()])
            with torch.no_grad():
                self.blocks[1].weight.copy_(3 * torch.eye(4))  # positive scaling: direction unchanged
                self.blocks[1].bias.zero_()

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x

    m = Model()
    assert block_influence.probe_block_influence(m, m.blocks, torch.randn(3, 5, 4)) == pytest.approx([0, 0, 0], abs=1e-6)


# ---------------------------------------------------------------- residual stream
def test_residual_stats_and_growth_slope():
    h = torch.randn(4, 10, 16)
    s = residual.stream_stats(h)
    a = np.abs(h.numpy())
    assert s["rms"] == pytest.approx(np.sqrt((a**2).mean()), rel=1e-5)
    assert s["max_over_median"] == pytest.approx(a.max() / np.median(a), rel=1e-2)  # torch median = lower middle
    rms = [2.0**i for i in range(6)]  # variance grows 4x per layer
    assert residual.growth_slope(rms) == pytest.approx(2 * math.log(2))
    assert residual.growth_slope([1.5] * 4) == pytest.approx(0.0)


def test_massive_activation_is_visible():
    h = torch.ones(2, 8, 32)
    h[0, 3, 5] = 1000.0
    assert residual.stream_stats(h)["max_over_median"] == pytest.approx(1000.0)


def test_residual_recorder_hooks_each_block_and_detaches():
    blocks = nn.ModuleList([nn.Identity(), nn.Identity()])
    rec = residual.ResidualRecorder(blocks)
    x = torch.full((2, 3), 2.0)
    blocks[1](blocks[0](x))
    out = rec.remove()
    assert out["rms"] == [2.0, 2.0] and not blocks[0]._forward_hooks


# ---------------------------------------------------------------- batch statistics
def test_batch_stat_fluctuation_matches_formula():
    class FakeBN(nn.Module):
        uses_batch_statistics = True

    m = nn.Sequential(FakeBN(), nn.Linear(2, 2), FakeBN())
    m[0].batch_stat, m[0].running_stat = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0])
    found = batch_stats.batch_stat_modules(m)
    assert [n for n, _ in found] == ["0", "2"]
    # module 2 has not run yet: skipped
    assert batch_stats.module_fluctuations(found) == pytest.approx([(1 / (1 + 1e-5) + 0) / 2])


# ---------------------------------------------------------------- throughput and summary
def test_item_counting_and_peak_memory():
    assert throughput.count_items((torch.zeros(4, 9, dtype=torch.long), None)) == (36, "tokens")
    assert throughput.count_items([torch.zeros(5, 3, 8, 8), torch.zeros(5)]) == (5, "images")
    assert throughput.peak_memory_mb(torch.device("cpu")) > 10


def test_run_summary_best_final_and_target():
    s = summary.RunSummary("val/acc1", 0.5)
    s.update(10, {"val/loss": 2.0, "val/acc1": 0.3})
    s.update(20, {"val/loss": 1.5, "val/acc1": 0.6})
    s.update(30, {"val/loss": float("nan"), "val/acc1": 0.55})
    out = s.metrics(diverged=True, diverged_step=25, spikes=2)
    assert out["summary/best_val_loss"] == 1.5 and math.isnan(out["summary/final_val_loss"])
    assert out["summary/best_val_acc1"] == 0.6 and out["summary/final_val_acc1"] == 0.55
    assert out["summary/steps_to_target"] == 20 and out["summary/diverged"] == 1.0
    assert out["summary/diverged_step"] == 25 and out["summary/loss_spikes"] == 2
