"""GPT model: interface, presets (parameter counts), positions, tying, bf16, errors."""

import pytest
import torch

import normlight
from normlight.models.transformer import num_params

LN = torch.nn.LayerNorm


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


@pytest.mark.parametrize(
    "name,params",
    [("gpt-nano", 120_576), ("gpt-tiny", 4_870_144), ("gpt-small", 124_439_808), ("gpt-medium", 354_823_168)],
)
def test_preset_parameter_counts(name, params):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = normlight.create_model(name, norm=LN)
    assert num_params(model) == params


def test_interface_and_forward():
    model = normlight.create_model("gpt-nano", norm=LN)
    assert model.family == "gpt" and model.vocab_size == 256 and model.max_seq_len == 64
    assert len(model.blocks) == 2 and model.placement_cls is normlight.get_placement("pre")
    assert model.spec["name"] == "gpt-nano" and model.spec["placement"] == "pre"
    assert model.spec["norm"] == "torch.nn.modules.normalization.LayerNorm"
    logits = model(torch.randint(0, 256, (2, 8)))
    assert logits.shape == (2, 8, 256) and torch.isfinite(logits).all()
    assert model.head.weight is model.tok_emb.weight  # tied by default


def test_causal():
    model = normlight.create_model("gpt-nano", norm=LN).eval()
    idx = torch.randint(0, 256, (1, 10))
    idx2 = idx.clone()
    idx2[0, 7:] = (idx2[0, 7:] + 1) % 256
    a, b = model(idx), model(idx2)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6) and not torch.allclose(a[:, 7:], b[:, 7:])


def test_rope_has_no_position_table_and_is_position_sensitive():
    model = normlight.create_model("gpt-nano", norm=LN, pos="rope", tie_weights=False, depth=1).eval()
    assert model.pos_emb is None and model.head.weight is not model.tok_emb.weight
    idx = torch.tensor([[5, 5, 5, 9]])
    # rope makes the last token's output depend on where the repeated tokens sit
    assert not torch.allclose(model(idx)[0, -1], model(torch.tensor([[9, 5, 5, 9]]))[0, -1])


def test_overrides_and_bf16():
    model = normlight.create_model(
        "gpt-tiny", norm=LN, depth=1, dim=32, num_heads=2, vocab_size=50, max_seq_len=16, mlp="swiglu"
    ).to(torch.bfloat16)
    out = model(torch.randint(0, 50, (2, 16)))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 16, 50) and torch.isfinite(out).all()


def test_errors_are_clear():
    model = normlight.create_model("gpt-nano", norm=LN)
    with pytest.raises(ValueError, match="exceeds max_seq_len 64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(normlight.PluginOptionError, match="post_fraction"):
        normlight.create_model("gpt-nano", norm=LN, placement="pre", placement_kwargs={"post_fraction": 0.5})
    with pytest.raises(normlight.UnknownNameError, match="placement 'prre'"):
        normlight.create_model("gpt-nano", norm=LN, placement="prre")
    with pytest.raises(normlight.PluginOptionError, match="pos must be"):
        normlight.create_model("gpt-nano", norm=LN, pos="alibi")


def test_attention_diagnostics_mode_through_the_model():
    model = normlight.create_model("gpt-nano", norm=LN).eval()
    idx = torch.randint(0, 256, (2, 8))
    fast = model(idx)
    assert all(b.attn.causal and not b.attn.record_attention and b.attn.last_attn_probs is None for b in model.blocks)
    for b in model.blocks:
        b.attn.record_attention = True
    assert torch.allclose(model(idx), fast, atol=1e-5)
    for b in model.blocks:
        assert b.attn.last_attn_probs.shape == (2, 4, 8, 8) and b.attn.last_max_logit.dim() == 0


def test_spec_rebuilds_the_same_architecture():
    model = normlight.create_model(
        "gpt-nano",
        norm="rmsnorm",
        placement="mix",
        placement_kwargs={"post_fraction": 0.5},
        qk_norm="layernorm",
        pos="rope",
        mlp="swiglu",
        depth=3,
    )
    spec = dict(model.spec)
    clone = normlight.create_model(spec.pop("name"), **spec)
    clone.load_state_dict(model.state_dict())  # strict: same parameter names and shapes
    idx = torch.randint(0, 256, (1, 8))
    assert torch.equal(clone.eval()(idx), model.eval()(idx))
    import json

    json.dumps(model.spec)  # plain serializable


def test_embedding_scale_option_is_a_learnable_sqrt_d_scalar():
    torch.manual_seed(0)
    plain = normlight.create_model("gpt-nano", norm=LN)
    torch.manual_seed(0)
    scaled = normlight.create_model("gpt-nano", norm=LN, emb_scale=True)
    assert plain.emb_scale is None and scaled.spec["emb_scale"] is True
    assert scaled.emb_scale.shape == (1,) and scaled.emb_scale.item() == pytest.approx(8.0)  # sqrt(64)
    assert num_params(scaled) == num_params(plain) + 1
    seen = {}
    scaled.blocks[0].register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    idx = torch.randint(0, 256, (2, 8))
    scaled(idx)
    want = scaled.tok_emb(idx) * 8.0 + scaled.pos_emb(torch.arange(8))
    assert torch.allclose(seen["x"], want, atol=1e-6)
    scaled(idx).sum().backward()
    assert scaled.emb_scale.grad is not None and scaled.emb_scale.grad.abs().item() > 0


def test_bias_false_drops_norm_biases_too():
    """nanoGPT's bias=False: no bias in any linear or norm (with any norm plugin)."""
    for norm in ("layernorm", "dyt", "batchnorm"):
        model = normlight.create_model("gpt-nano", norm=norm, bias=False)
        assert not [n for n, _ in model.named_parameters() if n.endswith(("bias", "beta"))], norm
    with_bias = normlight.create_model("gpt-nano")
    assert with_bias.blocks[0].norm1.bias is not None and with_bias.blocks[0].attn.qkv.bias is not None


def test_tied_model_refuses_a_state_whose_head_differs():
    model = normlight.create_model("gpt-nano")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["head.weight"] += 1.0
    with pytest.raises(ValueError, match="tie_weights=False"):
        model.load_state_dict(state)
    untied = normlight.create_model("gpt-nano", tie_weights=False)
    untied.load_state_dict(state)
    assert not torch.equal(untied.head.weight, untied.tok_emb.weight)
    model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()})  # an equal pair loads
