"""The composition matrix of the plugin kinds: every residual, mixer, pooling and depth regularizer x every
placement x {GPT, ViT} (with LayerNorm), plus every built-in of each kind x a few norms (with Pre-LN). Each
combination builds and trains one step (finite output, finite gradients, one SGD step, finite again); a
combination that cannot apply raises one error naming both plugins. The matrix of every norm x placement
with the default of each kind is tests/blocks/placements/test_norm_matrix.py.

Parametrized from the registries, so an installed plugin of any kind joins the matrix automatically.
"""

import re

import pytest
import torch

import normlight
from normlight.blocks.base import Block

PLACEMENTS = normlight.list_placements()
FEW_NORMS = ["rmsnorm", "batchnorm", "dyt"]
KINDS = {
    "residual": normlight.list_residuals(),
    "mixer": normlight.list_mixers(),
    "pool": normlight.list_poolings(),
    "depth_regularizer": normlight.list_depth_regularizers(),
}

pytestmark = pytest.mark.usefixtures("one_thread")


def customizes_attention(placement: str) -> bool:
    cls = normlight.get_placement(placement)
    return hasattr(cls, "init_weights") or any(
        getattr(cls, h) is not getattr(Block, h) for h in ("build_attention", "attention_parts")
    )


def impossible(family: str, placement: str = "pre", **plugins) -> str | None:
    """The error (regex) a combination must raise, or None if it must train."""
    mixer, residual, pool = plugins.get("mixer", "attention"), plugins.get("residual", "add"), plugins.get("pool")
    if family == "gpt" and mixer == "pool":
        return "mixer 'pool' cannot run in model 'gpt-nano'"
    if family == "gpt" and pool == "cls":
        return "readout 'cls' reads a class token"
    if family == "vit" and mixer == "pool" and pool in (None, "cls"):
        return "mixer 'pool' mixes tokens on the patch grid, but pooling 'cls'"
    if mixer != "attention" and customizes_attention(placement):
        return f"mixer '{mixer}' replaces attention, but placement"
    if residual != "add" and not normlight.get_placement(placement).supports_residuals:
        return f"residual '{residual}' cannot apply to placement"
    if residual == "value_residual" and mixer != "attention":
        return "mixes attention values"
    return None


def build(family: str, norm: str = "layernorm", placement: str = "pre", **plugins):
    shape = dict(depth=2, dim=32, num_heads=2, mlp_ratio=2.0, norm=norm, placement=placement)
    if family == "gpt":
        if "pool" in plugins:
            plugins["readout"] = plugins.pop("pool")
        m = normlight.create_model("gpt-nano", max_seq_len=8, vocab_size=32, **shape, **plugins)
        return m, torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(0))
    m = normlight.create_model("vit-tiny", img_size=8, patch_size=4, num_classes=3, **shape, **plugins)
    return m, torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def trains_one_step(family: str, **kw) -> None:
    what = f"{family} {kw}"
    torch.manual_seed(0)
    model, x = build(family, **kw)
    model.train()
    run = (
        (lambda: model.embed(x)) if family == "gpt" and "readout" in model.spec and "pool" in kw else (lambda: model(x))
    )
    out = run()
    assert torch.isfinite(out).all(), f"{what}: non-finite output"
    out.float().pow(2).mean().backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"{what}: non-finite gradient of {name}"
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(1e-2 * p.grad)
    hook = getattr(model.placement_cls, "after_optimizer_step", None)
    if hook is not None:
        hook(model)
    assert torch.isfinite(run()).all(), f"{what}: non-finite output after one step"


def check(family: str, **kw) -> None:
    plugins = {k: v for k, v in kw.items() if k in KINDS}
    expected = impossible(family, kw.get("placement", "pre"), **plugins)
    if expected is None:
        trains_one_step(family, **kw)
    else:
        with pytest.raises(normlight.NormlightError, match=re.escape(expected) if "(" in expected else expected):
            build(family, **kw)


@pytest.mark.parametrize("family", ["gpt", "vit"])
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("kind, name", [(k, n) for k in ("residual", "mixer", "depth_regularizer") for n in KINDS[k]])
def test_every_plugin_with_every_placement(kind, name, placement, family):
    check(family, placement=placement, **{kind: name})


@pytest.mark.parametrize("family", ["gpt", "vit"])
@pytest.mark.parametrize("placement", ["pre", "post", "peri"])
@pytest.mark.parametrize("pool", KINDS["pool"])
def test_every_pooling_with_placements(pool, placement, family):
    check(family, placement=placement, pool=pool)


@pytest.mark.parametrize("norm", FEW_NORMS)
@pytest.mark.parametrize("kind, name", [(k, n) for k in KINDS for n in KINDS[k]])
def test_every_plugin_with_a_few_norms(kind, name, norm):
    plugins = {kind: name}
    if kind == "mixer":
        plugins["pool"] = "mean"  # the pool mixer needs a grid without a class token
    check("vit", norm=norm, **plugins)


def test_plugins_compose_with_each_other():
    trains_one_step(
        "vit",
        placement="peri",
        norm="rmsnorm",
        pool="ggem",
        residual="laurel",
        mixer="identity",
        depth_regularizer="drop_path",
    )
    trains_one_step("gpt", placement="mix", residual="dwa", depth_regularizer="layerskip", pool="attn")
