"""Block's plugin hooks: a placement written with `x + F(x)` works by default and refuses to ignore a residual plugin."""

import re

import pytest
import torch

import normlight
from normlight.blocks.base import Block


class OldStyleBlock(Block):
    """Pre-LN written before residual plugins existed.

    ::

        x ─┬─ norm1 ─ attn ─(+)─┬─ norm2 ─ mlp ─(+)─> out
    """

    def forward(self, x, pos=None):
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


def test_old_style_placement_trains_with_the_default_residual():
    model = normlight.create_model("gpt-nano", depth=2, placement=OldStyleBlock)
    assert model(torch.randint(0, 256, (2, 8))).shape == (2, 8, 256)


def test_old_style_placement_with_a_residual_plugin_is_a_clear_error_not_a_silent_no_op():
    model = normlight.create_model("gpt-nano", depth=2, placement=OldStyleBlock, residual="gate")
    message = (
        "residual 'gate' was never applied: placement OldStyleBlock joins its branches with `x + F(x)` instead of "
        "`self.attn_residual(x, F(x))` / `self.mlp_residual(x, F(x))` (see docs/plugins.md, 'Residual plugins')"
    )
    with pytest.raises(normlight.PluginError, match=re.escape(message)):
        model(torch.randint(0, 256, (2, 8)))


class ParallelBlock(Block):
    """GPT-J style parallel block: one join for both sublayers, through the attention's residual hook.

    ::

        x ─┬─ norm1 ─┬─ attn ─┬─(+)─> out
           │         └─ mlp ──┘  │
           └─────────────────────┘
    """

    def forward(self, x, pos=None):
        h = self.norm1(x)
        return self.attn_residual(x, self.attn(h, pos) + self.mlp(h))


def test_a_placement_joining_through_one_hook_applies_the_plugin():
    model = normlight.create_model("gpt-nano", depth=2, placement=ParallelBlock, residual="gate")
    calls = []
    model.blocks[0].attn_residual.register_forward_hook(lambda m, a, o: calls.append(1))
    assert model(torch.randint(0, 256, (2, 8))).shape == (2, 8, 256) and calls == [1]


def test_a_placement_without_forward_names_itself():
    class NoForward(Block):
        """Forgot its forward."""

    blk = NoForward(8, 2)
    with pytest.raises(NotImplementedError, match=r"^NoForward must override forward\(x, pos=None\)$"):
        blk(torch.randn(1, 2, 8))


def test_builtin_placements_route_both_branches_through_the_residual_hooks():
    calls = []
    model = normlight.create_model("vit-tiny", depth=1, dim=32, num_heads=2, placement="sandwich", residual="scaled")
    blk = model.blocks[0]
    for site in ("attn", "mlp"):
        getattr(blk, f"{site}_residual").register_forward_hook(lambda m, a, o, s=site: calls.append(s))
    model(torch.randn(1, 3, 32, 32))
    assert calls == ["attn", "mlp"]


class ContextNorm(torch.nn.Module):
    """Parameter-free norm that keeps the context create_norm hands it."""

    def __init__(self, num_features, site=None, layer_idx=None, num_layers=None, num_heads=None):
        super().__init__()
        self.context = (num_features, site, layer_idx, num_layers, num_heads)

    def forward(self, x):
        return torch.nn.functional.layer_norm(x, x.shape[-1:])


def test_every_norm_gets_its_site_and_the_block_context():
    blk = normlight.get_placement("pre")(16, 2, layer_idx=2, num_layers=5, norm=ContextNorm, qk_norm=ContextNorm)
    assert blk.norm1.context == (16, "attn_in", 2, 5, 2) and blk.norm2.context == (16, "mlp_in", 2, 5, 2)
    assert blk.attn.q_norm.context == (8, "qk", 2, 5, 2)


class ContextResidual(torch.nn.Module):
    """Plain add that keeps the context create_residual hands it."""

    def __init__(self, dim, site=None, layer_idx=None, num_layers=None, num_heads=None):
        super().__init__()
        self.context = (dim, site, layer_idx, num_layers, num_heads)

    def forward(self, x, branch):
        return x + branch


def test_every_residual_gets_its_site_and_the_block_context():
    blk = normlight.get_placement("pre")(16, 2, layer_idx=1, num_layers=3, norm="layernorm", residual=ContextResidual)
    assert blk.attn_residual.context == (16, "attn", 1, 3, 2) and blk.mlp_residual.context == (16, "mlp", 1, 3, 2)


def test_a_placement_must_be_a_block_subclass():
    with pytest.raises(
        normlight.PluginError, match=r"a placement plugin must be a subclass of normlight\.blocks\.Block"
    ):
        normlight.get_placement(torch.nn.Linear)


def test_an_old_style_placement_takes_a_residual_plugin_that_acts_only_on_attention_values():
    # the "never applied" check is for plugins acting on the attn/mlp joins; value_residual acts inside attention
    model = normlight.create_model("gpt-nano", depth=2, placement=OldStyleBlock, residual="value_residual")
    assert model(torch.randint(0, 256, (2, 8))).shape == (2, 8, 256)
