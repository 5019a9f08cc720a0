"""Plans, the hidden-state cache and sub-layer removal: a cached evaluation equals running the plan from scratch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from normlight.analysis import AnalysisContext, Plan, as_layer_model
from normlight.analysis.context import dropped_sublayers
from tests.analysis.models import lm_batches, tiny_gpt


def test_plan_start_is_the_unchanged_prefix():
    assert Plan.full(4).start() == 4
    assert Plan.without(4, removed=[2]).start() == 2
    assert Plan((0, 2, 1, 3)).start() == 1
    assert Plan((0, (1, 2), 3)).start() == 1
    assert Plan.without(4, drop=[(1, "mlp")]).start() == 1


def _ce(logits, y):
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))


@pytest.mark.parametrize(
    "plan",
    [
        Plan.full(4),
        Plan.without(4, removed=[1, 3]),
        Plan((0, 2, 1, 3)),
        Plan((0, 1, 1, 2, 3)),
        Plan((0, (1, 2), 3)),
        Plan.without(4, drop=[(2, "attn"), (3, "mlp")]),
    ],
    ids=lambda p: str(p.steps) + str(sorted(p.drop)),
)
def test_cached_evaluation_equals_an_independent_forward(plan, one_thread):
    model = tiny_gpt()
    batches = lm_batches()
    ctx = AnalysisContext(as_layer_model(model), batches)
    got = ctx.evaluate(plan)
    # independent: the model's own modules in plain code, the branches removed by editing a copy's weights
    m = copy.deepcopy(model)
    with torch.no_grad():
        for i, kind in plan.drop:
            lin = m.blocks[i].attn.out_proj if kind == "attn" else m.blocks[i].mlp.fc2
            lin.weight.zero_()
            lin.bias.zero_()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            h = m.tok_emb(x) + m.pos_emb(torch.arange(x.shape[1]))
            for step in plan.steps:
                h = (
                    torch.stack([m.blocks[i](h) for i in step]).mean(0)
                    if isinstance(step, tuple)
                    else m.blocks[step](h)
                )
            total, n = total + _ce(m.head(m.norm(h)), y), n + y.numel()
    assert got.loss == pytest.approx(total / n, rel=1e-5)


def test_dropping_both_sublayers_of_a_pre_ln_block_is_the_identity(one_thread):
    layers = as_layer_model(tiny_gpt())
    h = torch.randn(2, 16, 32)
    with dropped_sublayers(layers, [(1, "attn"), (1, "mlp")]):
        torch.testing.assert_close(layers.block(1, h), h, rtol=0, atol=0)
    assert not torch.allclose(layers.block(1, h), h)  # hooks removed afterwards


def test_peri_ln_drop_zeroes_the_output_norm_too(one_thread):
    layers = as_layer_model(tiny_gpt("peri"))
    with torch.no_grad():
        layers.blocks[0].attn_out_norm.bias.fill_(0.5)  # LN(0) = bias: zeroing attn alone would leave it
    h = torch.randn(2, 16, 32)
    with dropped_sublayers(layers, [(0, "attn"), (0, "mlp")]):
        torch.testing.assert_close(layers.block(0, h), h, rtol=0, atol=0)


def test_heal_trains_a_copy_and_leaves_the_model_untouched(one_thread):
    model = tiny_gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = lm_batches()
    ctx = AnalysisContext(as_layer_model(model), batches, train_batches=lambda: iter(batches))
    plan = Plan.without(4, removed=[1])
    unhealed = ctx.evaluate(plan)
    healed = ctx.heal(plan, steps=5, lr=1e-2)
    assert healed.loss < unhealed.loss  # it fits the batches it trains on
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert ctx.heal(plan, steps=5, lr=1e-2).loss == healed.loss  # seeded: the same run twice


def test_block_calls_count_the_cost(one_thread):
    ctx = AnalysisContext(as_layer_model(tiny_gpt()), lm_batches(n=2))
    ctx.states()
    assert ctx.block_calls == 4 * 2
    ctx.evaluate(Plan.without(4, removed=[2]))  # starts from the cached h_2: runs block 3 only
    assert ctx.block_calls == 4 * 2 + 1 * 2
