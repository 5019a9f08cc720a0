"""Stochastic depth (Huang et al. 2016) and drop-path: rates over depth, train/eval behaviour (numpy-free formulas)."""

import pytest
import torch

import normlight


def regs(name, n=4, **kw):
    return [normlight.create_depth_regularizer(name, layer_idx=i, num_layers=n, **kw) for i in range(n)]


def test_stochastic_depth_linear_decay_of_survival():
    rs = regs("stochastic_depth", 4)  # p_l = 1 - l/L (1 - 0.5), l = 1..4
    assert [r.survival for r in rs] == pytest.approx([0.875, 0.75, 0.625, 0.5])
    assert [r.diagnostics()["drop_rate"] for r in rs] == pytest.approx([0.125, 0.25, 0.375, 0.5])


def test_stochastic_depth_drops_whole_batches_in_training_and_scales_in_eval():
    r = regs("stochastic_depth", 2)[1]  # survival 0.5
    x, h = torch.zeros(64, 3, 2), torch.ones(64, 3, 2)
    torch.manual_seed(0)
    outs = [r.train()(x, h) for _ in range(400)]
    assert all(torch.equal(o, h) or torch.equal(o, x) for o in outs)  # one draw per mini-batch
    assert sum(torch.equal(o, h) for o in outs) / 400 == pytest.approx(0.5, abs=0.07)
    torch.testing.assert_close(r.eval()(x, h), x + 0.5 * (h - x))  # the expected update


def test_drop_path_per_sample_inverted_scaling_and_linear_rate():
    rs = regs("drop_path", 5, rate=0.2)
    assert [r.drop_rate for r in rs] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    r = rs[-1]
    x, h = torch.zeros(4000, 1, 1), torch.ones(4000, 1, 1)
    torch.manual_seed(0)
    out = r.train()(x, h)
    kept = out.flatten() > 0
    assert torch.allclose(out.flatten()[kept], torch.tensor(1 / 0.8))  # kept updates divided by the keep prob
    assert kept.float().mean().item() == pytest.approx(0.8, abs=0.03)  # per sample
    assert torch.equal(r.eval()(x, h), h)


def test_regularized_model_is_deterministic_in_eval_and_trains():
    torch.manual_seed(0)
    m = normlight.create_model("vit-tiny", depth=3, dim=32, num_heads=2, img_size=16, depth_regularizer="drop_path")
    img = torch.randn(2, 3, 16, 16)
    m.eval()
    assert torch.equal(m(img), m(img))
    m.train()(img).sum().backward()
    assert all(p.grad is not None for p in m.blocks.parameters())
