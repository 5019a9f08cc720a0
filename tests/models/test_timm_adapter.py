"""timm models with every registered norm: a ResNet, a ViT and a ConvNeXt build, run and backprop."""

import inspect

import pytest
import torch

import normlight
from normlight.errors import PluginOptionError, UnknownNameError
from normlight.layers.layout import ChannelsFirst
from normlight.registry import lookup

FAMILIES = {  # tiny timm test models; ConvNeXt must use its conv MLP to take a custom norm (timm's rule)
    "resnet": ("test_resnet", {}),
    "vit": ("test_vit", {}),
    "convnext": ("test_convnext", {"conv_mlp": True}),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def options_for(norm):
    """Group norms default to 32 groups; these models have 16..192 channels, all divisible by 8."""
    factory = lookup("norms", norm).load()
    try:
        return {"num_groups": 8} if "num_groups" in inspect.signature(factory).parameters else {}
    except (TypeError, ValueError):
        return {}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("norm", normlight.list_norms())
def test_timm_family_with_every_norm(family, norm):
    name, kw = FAMILIES[family]
    torch.manual_seed(0)
    model = normlight.create_model(
        f"timm:{name}", norm=norm, norm_kwargs=options_for(norm), num_classes=4, img_size=32, **kw
    )
    factory = lookup("norms", norm).load()
    norms = [m for m in model.modules() if isinstance(factory, type) and isinstance(m, factory)]
    assert norms or not isinstance(factory, type)
    assert not any(type(m).__name__ == "PlaceholderNorm" for m in model.modules())
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_layouts_follow_the_model():
    cnn = normlight.create_model("timm:test_resnet", norm="rmsnorm", num_classes=4, img_size=32)
    vit = normlight.create_model("timm:test_vit", norm="rmsnorm", num_classes=4, img_size=32)
    # rmsnorm has no channels-first path: on CNN maps it runs through the adapter, on tokens directly
    assert sum(isinstance(m, ChannelsFirst) for m in cnn.modules()) == 15
    assert not any(isinstance(m, ChannelsFirst) for m in vit.modules())
    bn = normlight.create_model("timm:test_resnet", norm="batchnorm", num_classes=4)
    assert all(m.channels_first for m in bn.modules() if type(m).__name__ == "BatchNorm")  # its own fast path


def test_interface_and_spec():
    model = normlight.create_model(
        "timm:test_vit", norm="layernorm", norm_kwargs={"eps": 1e-6}, num_classes=3, img_size=32
    )
    assert model.family == "timm" and model.placement_cls is None
    assert (model.num_classes, model.img_size, model.in_chans) == (3, 32, 3)
    assert len(model.blocks) == len(list(model.blocks)) > 0
    assert model.spec["name"] == "timm:test_vit" and model.spec["norm"] == "layernorm"
    assert model.spec["norm_kwargs"] == {"eps": 1e-6}
    cnn = normlight.create_model("timm:test_resnet", num_classes=3)  # timm's own norms, size-agnostic CNN
    assert cnn.family == "timm" and len(cnn.blocks) == 4 and type(cnn.blocks[0]).__name__ == "BasicBlock"
    assert "blocks" not in dict(cnn.named_children())


def test_clear_errors():
    with pytest.raises(UnknownNameError, match="resnet18"):
        normlight.create_model("timm:resnet_18", norm="batchnorm")
    with pytest.raises(PluginOptionError, match="test_efficientnet"):
        normlight.create_model("timm:test_efficientnet", norm="batchnorm")
    with pytest.raises(PluginOptionError, match="test_convnext.*conv_mlp"):
        normlight.create_model("timm:test_convnext", norm="batchnorm")
    with pytest.raises(UnknownNameError, match="rmsnorm"):
        normlight.create_model("timm:test_vit", norm="rmsnrom")
    with pytest.raises(PluginOptionError, match="groupnorm.*24"):
        normlight.create_model("timm:test_convnext", norm="groupnorm", conv_mlp=True)


def test_like_for_like_with_timms_default_eps():
    """timm's ViT calls norm_layer(dim) and relies on timm's LayerNorm eps 1e-6: norm="layernorm" must get it too,
    so the adapter model equals plain timm with copied weights (no eps passed by anyone)."""
    import timm

    kw = dict(num_classes=5, img_size=32, patch_size=8, depth=2)
    torch.manual_seed(0)
    plain = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw).eval()
    ours = normlight.create_model("timm:vit_tiny_patch16_224", norm="layernorm", **kw).eval()
    assert {m.eps for m in ours.modules() if type(m).__name__ == "LayerNorm"} == {1e-6}
    with torch.no_grad():  # inputs to the norms with a small variance, where eps matters
        plain.patch_embed.proj.weight.mul_(0.05)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert (plain(x) - ours(x)).abs().max() == 0
    explicit = normlight.create_model("timm:vit_tiny_patch16_224", norm="layernorm", norm_kwargs={"eps": 1e-5}, **kw)
    assert {m.eps for m in explicit.modules() if type(m).__name__ == "LayerNorm"} == {1e-5}  # the user's wins
