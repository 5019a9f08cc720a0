"""ResFormer value residual: later layers attend over lambda_1 V_n + lambda_2 V_1 (numpy), layer 1 unchanged."""

import pytest
import torch
import torch.nn.functional as F

import normlight


def test_values_of_later_layers_are_mixed_with_the_first_layers():
    torch.manual_seed(0)
    model = normlight.create_model("gpt-nano", depth=3, residual="value_residual").eval()
    seen = {}
    for i, blk in enumerate(model.blocks):
        blk.attn.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, a[0]))
    idx = torch.randint(0, 256, (2, 8))
    with torch.no_grad():
        model(idx)
        for i in (0, 2):
            attn = model.blocks[i].attn
            q, k, v = attn.project(seen[i])
            v1 = model.blocks[0].attn.project(seen[0])[2]
            mixed = v if i == 0 else 0.5 * v + 0.5 * v1
            y = F.scaled_dot_product_attention(q, k, mixed, is_causal=True)
            want = attn.out_proj(y.transpose(1, 2).reshape(2, 8, -1))
            # run block i's attention alone on its recorded input (layer 0 records its own values as V_1)
            attn.value_residual.first.v = v1
            torch.testing.assert_close(attn(seen[i]), want, rtol=1e-5, atol=1e-6)
    assert model.blocks[2].attn.value_residual.first is model.blocks[1].attn.value_residual.first


def test_learnable_lambdas_are_trained_and_logged():
    model = normlight.create_model("gpt-nano", depth=2, residual="value_residual", residual_kwargs={"learnable": True})
    model(torch.randint(0, 256, (2, 8))).sum().backward()
    lam = model.blocks[1].attn.value_residual.lambdas
    assert lam.grad is not None and model.blocks[1].attn.value_residual.diagnostics() == pytest.approx(
        {"lambda_own": 0.5, "lambda_first": 0.5}
    )


def test_needs_the_attention_mixer():
    with pytest.raises(normlight.PluginOptionError, match="residual 'value_residual' mixes attention values.*'pool'"):
        normlight.create_model(
            "vit-tiny", depth=2, dim=32, num_heads=2, pool="mean", mixer="pool", residual="value_residual"
        )
