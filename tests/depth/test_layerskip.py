"""LayerSkip: exponential rate over depth, early-exit weights (the paper's e_scale formula), exits through the head."""

import math

import pytest
import torch

import normlight
from normlight.depth.layerskip import exit_weights


def test_dropout_rate_rises_exponentially_from_zero_to_p_max():
    rs = [normlight.create_depth_regularizer("layerskip", layer_idx=i, num_layers=4, p_max=0.2) for i in range(4)]
    want = [0.2 * (math.exp(i * math.log(2) / 3) - 1) for i in range(4)]
    assert [r.drop_rate for r in rs] == pytest.approx(want) and want[0] == 0 and want[-1] == pytest.approx(0.2)


def test_exit_weights_follow_the_papers_e_scale():
    # L = 4, e = 0.5: e(l) = 0.5 * sum_{i<=l} i for l < 3, e(3) = 3 + 0.5 * (0 + 1 + 2)
    e = [0.0, 0.5, 1.5, 4.5]
    assert exit_weights(4, 0.5) == pytest.approx([v / sum(e) for v in e])
    assert exit_weights(4, 0.0) == [0.0, 0.0, 0.0, 1.0]


def test_early_exit_loss_goes_through_the_shared_head():
    torch.manual_seed(0)
    kw = dict(depth=3, depth_regularizer="layerskip", depth_regularizer_kwargs={"p_max": 0.0, "early_exit_scale": 1.0})
    model = normlight.create_model("gpt-nano", **kw).train()
    idx = torch.randint(0, 256, (2, 8))
    logits = model(idx)
    final_w, exits = model.early_exits
    assert final_w == pytest.approx(exit_weights(3, 1.0)[-1]) and [w for w, _ in exits] == pytest.approx(
        [exit_weights(3, 1.0)[1]]  # layer 0's weight is 0
    )
    h = model.drop(model.tok_emb(idx) + model.pos_emb(torch.arange(8)))
    h = model.blocks[1](model.blocks[0](h))
    torch.testing.assert_close(exits[0][1], model.head(model.norm(h)))
    assert logits.shape == (2, 8, 256)
    assert model.eval()(idx) is not None and model.early_exits is None  # only while training
