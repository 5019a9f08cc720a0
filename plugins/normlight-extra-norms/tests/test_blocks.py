"""The parallel block: its data flow against a hand computation, and normlight's placement conformance kit."""

import torch

import normlight
from normlight.testing import PlacementPluginConformance


def test_parallel_block_is_x_plus_attn_plus_mlp_of_one_shared_norm():
    cls = normlight.get_placement("parallel")
    torch.manual_seed(0)
    blk = cls(16, 2, norm="layernorm", causal=True)
    with torch.no_grad():  # a non-trivial norm affine so a wrong norm placement shows
        blk.norm1.weight.uniform_(0.5, 1.5)
        blk.norm1.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 5, 16)
    h = torch.nn.functional.layer_norm(x, (16,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    want = x + blk.attn(h) + blk.mlp(h)
    torch.testing.assert_close(blk(x), want)
    assert [n for n, m in blk.named_children() if "norm" in n] == ["norm1"]  # one norm per block


def test_parallel_block_trains_in_gpt_with_a_plugin_norm():
    model = normlight.create_model("gpt-nano", norm="biasnorm", placement="parallel")
    assert model.placement_cls is normlight.get_placement("parallel")
    idx = torch.randint(0, model.vocab_size, (2, 8))
    model(idx).logsumexp(-1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


class TestParallelBlockConformance(PlacementPluginConformance):
    placement = "parallel"
    norm = "l1norm"
