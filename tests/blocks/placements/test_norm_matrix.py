"""Every registered norm x every registered placement x {GPT, ViT}: builds, forward and backward finite.

Widths (64, head_dim 32, MLP 128) are multiples of 32 so group-based norms with 32 groups fit.

Parametrized over the registries at collection time, so a newly installed plugin (norm or placement,
any distribution) is covered automatically. Only plugins that fail to IMPORT are skipped, with the reason.
"""

import pytest
import torch

import normlight
from normlight.errors import PluginError

NORMS = normlight.list_norms()
PLACEMENTS = normlight.list_placements()


def load_or_skip(kind, name):
    entry = normlight.registry.lookup(kind, name)
    try:
        entry.load()
    except PluginError as exc:
        pytest.skip(f"{kind[:-1]} plugin {name!r} is broken: {exc}")


def tiny(family, norm, placement):
    shape = dict(depth=2, dim=64, num_heads=2, mlp_ratio=2.0, norm=norm, placement=placement)
    if family == "gpt":
        return normlight.create_model("gpt-nano", max_seq_len=8, vocab_size=32, **shape), torch.randint(0, 32, (2, 8))
    return normlight.create_model("vit-tiny", img_size=8, patch_size=4, num_classes=3, **shape), torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("family", ["gpt", "vit"])
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("norm", NORMS)
def test_builds_forward_backward_finite(norm, placement, family):
    load_or_skip("norms", norm)
    load_or_skip("placements", placement)
    torch.manual_seed(0)
    if (norm, placement) == ("layernorm_scaling", "lns"):  # the one refused pair: it would scale by 1/l
        with pytest.raises(normlight.PluginOptionError, match="scaled twice"):
            tiny(family, norm, placement)
        return
    model, x = tiny(family, norm, placement)
    model.train()
    out = model(x)
    assert torch.isfinite(out).all(), f"{norm} x {placement} x {family}: non-finite output"
    out.float().pow(2).mean().backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"{norm} x {placement} x {family}: non-finite grad of {name}"
    assert model.spec["norm"] == norm and model.spec["placement"] == placement


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_works_as_per_head_qk_norm(norm):
    load_or_skip("norms", norm)
    torch.manual_seed(0)
    model = normlight.create_model(
        "gpt-nano", max_seq_len=8, vocab_size=32, depth=1, dim=64, num_heads=2, norm="identity", qk_norm=norm
    )
    assert model.spec["qk_norm"] == norm
    out = model(torch.randint(0, 32, (2, 8)))
    out.pow(2).mean().backward()
    assert torch.isfinite(out).all() and torch.isfinite(model.blocks[0].attn.qkv.weight.grad).all()
