"""ViT model: interface, presets, pooling, Dual PatchNorm, LaPE, errors."""

import pytest
import torch

import normlight
from normlight.models.transformer import num_params

LN = torch.nn.LayerNorm


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


@pytest.mark.parametrize("name,params", [("vit-tiny", 2_693_578), ("vit-small", 22_050_664), ("vit-base", 86_567_656)])
def test_preset_parameter_counts(name, params):
    with torch.device("meta"):
        model = normlight.create_model(name, norm=LN)
    assert num_params(model) == params


def small(**kw):
    return normlight.create_model("vit-tiny", norm=LN, depth=2, dim=32, num_heads=2, img_size=16, **kw)


@pytest.mark.parametrize("pool", ["cls", "mean", "gem"])
def test_interface_and_pooling(pool):
    model = small(pool=pool, num_classes=7, in_chans=1)
    assert model.family == "vit" and model.num_classes == 7 and model.img_size == 16 and model.in_chans == 1
    assert model.spec["pool"] == pool and model.placement_cls is normlight.get_placement("pre")
    out = model(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    if pool == "gem":
        assert model.pooling.p.item() == 3.0 and model.pooling.p.grad is not None


def test_dual_patchnorm_is_linear_and_scale_invariant():
    model = small(dual_patchnorm=True).eval()
    pe = model.patch_embed
    assert isinstance(pe.proj, torch.nn.Linear) and pe.proj.in_features == 4 * 4 * 3
    assert pe.proj.bias is not None
    img = torch.randn(2, 3, 16, 16)
    assert torch.allclose(pe(img), pe(10 * img), atol=1e-5)  # LN_pre removes the pixel scale
    # close-but-wrong variant (post-only LN) is not invariant when the Linear has a bias
    post_only = pe.norm_post(pe.proj(img.reshape(2, 3, 4, 4, 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 48)))
    post_only10 = pe.norm_post(pe.proj(10 * img.reshape(2, 3, 4, 4, 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 48)))
    assert not torch.allclose(post_only, post_only10, atol=1e-3)


def test_lape_is_progressive_and_not_added_to_input():
    model = small(lape=True).eval()
    seen = []
    for blk in model.blocks:
        blk.register_forward_pre_hook(lambda m, args: seen.append(args[1].detach().clone()))
    model(torch.randn(1, 3, 16, 16))
    pe = model.pos_emb
    assert torch.allclose(seen[0], model.pe_norms[0](pe), atol=1e-6)
    assert torch.allclose(seen[1], model.pe_norms[1](model.pe_norms[0](pe)), atol=1e-6)
    assert not torch.allclose(seen[1], model.pe_norms[1](pe), atol=1e-3)
    # with zero attention output weights the residual stream carries no positional signal
    for blk in model.blocks:
        torch.nn.init.zeros_(blk.attn.out_proj.weight)
    img = torch.zeros(1, 3, 16, 16)  # identical patches: any token difference would be positional
    tokens = []
    model.norm.register_forward_hook(lambda m, a, o: tokens.append(a[0]))
    model(img)
    patch_tokens = tokens[0][0, 1:]
    assert torch.allclose(patch_tokens, patch_tokens[:1].expand_as(patch_tokens), atol=1e-6)


def test_errors_and_bf16():
    with pytest.raises(normlight.PluginOptionError, match="img_size 30 is not divisible by patch_size 4"):
        normlight.create_model("vit-tiny", norm=LN, img_size=30)
    model = small()
    with pytest.raises(ValueError, match=r"expects images of shape \(B, 3, 16, 16\)"):
        model(torch.randn(1, 3, 32, 32))
    out = small().to(torch.bfloat16)(torch.randn(2, 3, 16, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_spec_rebuilds_the_same_architecture():
    model = small(pool="gem", dual_patchnorm=True, lape=True, placement="normformer", qk_norm="rmsnorm")
    spec = dict(model.spec)
    spec["norm"] = LN
    clone = normlight.create_model(spec.pop("name"), **spec)
    clone.load_state_dict(model.state_dict())
    img = torch.randn(1, 3, 16, 16)
    assert torch.equal(clone.eval()(img), model.eval()(img))
