"""Paper-specific numeric checks (reference norms.md sec 7): Peri-LN, Mix-LN, LayerNorm Scaling, HybridNorm."""

import math
import re

import pytest
import torch
from torch import nn

import normlight

LN = nn.LayerNorm


def block(name, layer_idx=0, num_layers=4, **kw):
    torch.manual_seed(0)
    return normlight.get_placement(name)(16, 2, layer_idx=layer_idx, num_layers=num_layers, norm=LN, **kw)


@pytest.mark.parametrize("name", ["peri", "sandwich"])
def test_peri_increment_is_unit_variance_and_invariant_to_wo_scale(name):
    blk = block(name)
    with torch.no_grad():  # silence the MLP: LN(0) = 0 with beta 0, so the increment is the attention's
        blk.mlp.fc2.weight.zero_()
        blk.mlp.fc2.bias.zero_()
    x = torch.randn(2, 6, 16)
    inc = blk(x) - x
    assert torch.allclose(inc.mean(-1), torch.zeros(2, 6), atol=1e-5)
    assert torch.allclose(inc.var(-1, unbiased=False), torch.ones(2, 6), atol=1e-3)
    with torch.no_grad():
        blk.attn.out_proj.weight.mul_(100)
        blk.attn.out_proj.bias.mul_(100)
    assert torch.allclose(blk(x) - x, inc, atol=2e-3)  # equal up to the LN eps (1e-5 vs var(W_o a))
    # Pre-LN, by contrast, passes the scale straight into the stream
    pre = block("pre")
    before = pre(x) - x
    with torch.no_grad():
        pre.attn.out_proj.weight.mul_(100)
    assert not torch.allclose(pre(x) - x, before, atol=1e-2)


def test_mix_ln_first_quarter_outputs_unit_rms():
    torch.manual_seed(0)
    model = normlight.create_model("gpt-nano", depth=12, dim=32, num_heads=2, norm=LN, placement="mix")
    # random weights of unit gain (not GPT-2's std 0.02, whose tiny Pre-LN updates can leave a unit-RMS stream
    # within the tolerance): a Pre-LN block then visibly moves the RMS of its input
    with torch.no_grad():
        for b in model.blocks:
            for lin in (b.attn.qkv, b.attn.out_proj, b.mlp.fc1, b.mlp.fc2):
                nn.init.xavier_normal_(lin.weight)
    x = model.tok_emb(torch.randint(0, 256, (2, 8)))
    rms = []
    with torch.no_grad():
        for b in model.blocks:
            x = b(x)
            rms.append(x.pow(2).mean(-1).sqrt())
    for i, r in enumerate(rms):
        close = torch.allclose(r, torch.ones_like(r), atol=1e-3)
        assert close == (i < 3), f"block {i}: per-token RMS {r.mean():.4f}"


def test_lns_sublayer_inputs_are_scaled_by_one_over_sqrt_layer():
    seen = {}
    model = normlight.create_model("gpt-nano", depth=4, dim=32, num_heads=2, norm=LN, placement="lns")
    for i, b in enumerate(model.blocks):
        b.attn.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(("attn", i), a[0]))
        b.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(("in", i), a[0]))
    model(torch.randint(0, 256, (2, 8)))
    for i, rounded in enumerate([1.0, 0.7071, 0.5774, 0.5]):  # 1/sqrt(l), l = layer_idx + 1
        scale = 1 / math.sqrt(i + 1)
        x = seen[("in", i)]
        ln = nn.functional.layer_norm(x, (32,), model.blocks[i].norm1.weight, model.blocks[i].norm1.bias)
        assert torch.allclose(seen[("attn", i)], ln * scale, atol=1e-4)
        assert model.blocks[i].ln_scale == pytest.approx(rounded, abs=1e-4)
    assert isinstance(model.norm, nn.LayerNorm)  # final norm present, not scaled


def test_hybrid_attention_is_input_scale_invariant_and_ffn_is_post_norm():
    blk = block("hybrid", bias=False)
    x = torch.randn(2, 6, 16)
    a = blk.attn(x)
    assert torch.allclose(blk.attn(3.7 * x), a, atol=1e-4)  # q, k, v all normalized, no biases
    with torch.no_grad():
        blk.mlp.fc1.weight.zero_()
        blk.mlp.fc2.weight.zero_()
    assert torch.allclose(blk(x), blk.norm2(x + a), atol=1e-6)
    assert not torch.allclose(blk(x), x + a, atol=1e-2)
    # the other placements are not invariant
    pre = block("pre", bias=False)
    assert not torch.allclose(pre.attn(3.7 * x), pre.attn(x), atol=1e-3)


def test_hybrid_default_attention_is_bias_free_and_scale_invariant():
    blk = block("hybrid")  # the model's bias=True default: attention stays bias-free (reference OLMo config)
    assert blk.attn.qkv.bias is None and blk.attn.out_proj.bias is None and blk.mlp.fc1.bias is not None
    x = torch.randn(2, 6, 16)
    assert torch.allclose(blk.attn(3.7 * x), blk.attn(x), atol=1e-4)
    biased = block("hybrid", attn_bias=True)
    with torch.no_grad():
        biased.attn.qkv.bias.normal_()
    assert not torch.allclose(biased.attn(3.7 * x), biased.attn(x), atol=1e-3)


def test_normformer_drops_out_after_the_post_attention_norm_as_fairseq():
    p = 0.5
    blk = block("normformer", dropout=p)
    blk.attn.attn_dropout = 0.0  # keep the attention itself deterministic; test the residual dropout's place
    with torch.no_grad():
        blk.mlp.fc2.weight.zero_()
        blk.mlp.fc2.bias.zero_()
    x = torch.randn(2, 6, 16)
    blk.eval()
    clean = blk.attn_out_norm(blk.attn(blk.norm1(x)))  # LN output: per token mean 0, var 1
    blk.train()
    torch.manual_seed(1)
    inc = blk(x) - x
    kept = inc != 0
    assert 0.3 < 1 - kept.float().mean().item() < 0.7  # dropout zeroes entries of the LN OUTPUT
    assert torch.allclose(inc[kept] * (1 - p), clean[kept], atol=1e-5)


def test_lns_norm_route_and_placement_route_build_the_same_model():
    torch.manual_seed(0)
    a = normlight.create_model("gpt-nano", depth=4, placement="pre", norm="layernorm_scaling")
    torch.manual_seed(0)
    b = normlight.create_model("gpt-nano", depth=4, placement="lns", norm="layernorm")
    idx = torch.randint(0, 256, (2, 8))
    assert torch.allclose(a(idx), b(idx), atol=1e-5)
    assert a.norm.scale == 1.0  # the paper leaves the final norm unscaled
    for m in (a, b):  # plain N(0, 0.02) for the residual writers, not GPT-2's 0.02/sqrt(2L) = 0.0071
        w = torch.cat([blk.attn.out_proj.weight.flatten() for blk in m.blocks])
        assert w.std().item() == pytest.approx(0.02, rel=0.05)
    message = (
        "placement 'lns' already scales the pre-norm outputs by 1/sqrt(l); with norm 'layernorm_scaling' they would "
        "be scaled twice (1/l). Use placement 'lns' with norm 'layernorm' or 'rmsnorm', or placement 'pre' with norm "
        "'layernorm_scaling' (the same model)"
    )
    with pytest.raises(normlight.PluginOptionError, match=re.escape(message)):
        normlight.create_model("gpt-nano", placement="lns", norm="layernorm_scaling")


def test_mix_fraction_bounds_are_all_pre_and_all_post():
    mix = normlight.get_placement("mix")
    assert [mix(16, 2, layer_idx=i, num_layers=4, norm=LN, post_fraction=0.0).is_post for i in range(4)] == [False] * 4
    assert [mix(16, 2, layer_idx=i, num_layers=4, norm=LN, post_fraction=1.0).is_post for i in range(4)] == [True] * 4


class TaggedNorm(nn.Module):
    """Parameter-free LayerNorm that keeps its site and its ``tag`` option."""

    def __init__(self, num_features, site=None, tag=None):
        super().__init__()
        self.num_features, self.site, self.tag = num_features, site, tag

    def forward(self, x):
        return nn.functional.layer_norm(x, (self.num_features,))


def test_hybrid_qkv_norms_come_from_the_right_spec():
    """q/k take the qk_norm spec (and its options) when given, else the block norm with its options; v always
    the block norm; all three per head (size head_dim) at site "qk"."""
    hybrid = normlight.get_placement("hybrid")
    own = hybrid(16, 2, norm=TaggedNorm, norm_kwargs={"tag": "block"})
    split = hybrid(
        16, 2, norm=TaggedNorm, norm_kwargs={"tag": "block"}, qk_norm=TaggedNorm, qk_norm_kwargs={"tag": "qk"}
    )
    for blk, qk_tag in ((own, "block"), (split, "qk")):
        a = blk.attn
        assert [(m.num_features, m.site, m.tag) for m in (a.q_norm, a.k_norm, a.v_norm)] == [
            (8, "qk", qk_tag),
            (8, "qk", qk_tag),
            (8, "qk", "block"),
        ]


def test_hybrid_star_applies_to_block_zero_by_default():
    blk = normlight.get_placement("hybrid")(16, 2, norm=LN, star=True)  # layer_idx defaults to 0
    assert blk.star and isinstance(blk.norm1, LN)
