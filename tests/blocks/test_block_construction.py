"""Block's construction: its signature defaults, the arguments it hands to a mixer plugin, and its refusals."""

import re

import pytest
import torch
from torch import nn

import normlight
from normlight.blocks.factory import get_placement
from normlight.residuals.add import Add


class RecordingMixer(nn.Module):
    """A token mixer that keeps the arguments it was built with and returns its input.

    ::

        x ──> x
    """

    def __init__(
        self,
        dim,
        num_heads=None,
        causal=False,
        bias=None,
        dropout=None,
        rope=None,
        max_seq_len=None,
        layer_idx=None,
        num_layers=None,
        window=3,
    ):
        super().__init__()
        self.got = dict(
            dim=dim,
            num_heads=num_heads,
            causal=causal,
            bias=bias,
            dropout=dropout,
            rope=rope,
            max_seq_len=max_seq_len,
            layer_idx=layer_idx,
            num_layers=num_layers,
            window=window,
        )

    def forward(self, x, pos=None):
        return x


def test_a_block_built_from_dim_and_heads_alone_has_the_documented_defaults():
    block = get_placement("pre")(8, 2)
    assert (block.layer_idx, block.num_layers) == (0, 1)
    assert type(block.norm1) is type(normlight.create_norm("layernorm", 8)) and block.norm1.weight.shape == (8,)
    assert block.mlp_hidden == 32 and block.mlp.act == "gelu" and block.mlp.fc1.out_features == 32
    attn = block.attn
    assert attn.causal is False and attn.rope is None and attn.attn_dropout == 0.0 and attn.resid_dropout.p == 0.0
    assert attn.qkv.bias is not None and block.mlp.fc2.bias is not None
    assert isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)
    assert isinstance(block.attn_residual, Add) and isinstance(block.mlp_residual, Add)
    assert block.depth_residual is None


def test_rope_tables_cover_the_default_max_seq_len_of_1024():
    block = get_placement("pre")(8, 2, rope=True)
    assert block.attn.rope is not None and block.attn.rope.cos.shape[0] == 1024


def test_a_mixer_plugin_gets_the_block_context_and_its_own_options():
    block = get_placement("pre")(
        8,
        2,
        layer_idx=1,
        num_layers=3,
        causal=True,
        bias=False,
        dropout=0.25,
        rope=True,
        max_seq_len=77,
        mixer=RecordingMixer,
        mixer_kwargs={"window": 5},
    )
    assert isinstance(block.attn, RecordingMixer)
    assert block.attn.got == dict(
        dim=8,
        num_heads=2,
        causal=True,
        bias=False,
        dropout=0.25,
        rope=True,
        max_seq_len=77,
        layer_idx=1,
        num_layers=3,
        window=5,
    )


def test_attention_gets_the_mixer_options_too():
    block = get_placement("pre")(8, 2, mixer_kwargs={"head_scale": True})
    assert block.attn.head_scale is not None and block.attn.head_scale.shape == (2,)


@pytest.mark.parametrize("layer_idx, num_layers", [(3, 3), (-1, 3), (0, 0)])
def test_a_layer_index_outside_the_stack_is_refused(layer_idx, num_layers):
    message = f"layer_idx {layer_idx} is outside [0, num_layers={num_layers})"
    with pytest.raises(ValueError, match=re.escape(message)):
        get_placement("pre")(8, 2, layer_idx=layer_idx, num_layers=num_layers)


def test_the_last_layer_of_the_stack_is_accepted():
    assert get_placement("pre")(8, 2, layer_idx=2, num_layers=3).layer_idx == 2


def test_an_unknown_placement_option_is_named():
    message = "placement PreNormBlock does not accept option(s) ['alpha', 'zeta']; see its class docstring for the options it takes"
    with pytest.raises(normlight.PluginOptionError, match=re.escape(message)):
        get_placement("pre")(8, 2, zeta=1, alpha=2)


def test_qk_norm_with_a_mixer_without_queries_is_refused():
    message = "qk_norm needs attention queries and keys, which mixer tests.blocks.test_block_construction.RecordingMixer has not; drop qk_norm"
    with pytest.raises(normlight.PluginOptionError, match=re.escape(message)):
        get_placement("pre")(8, 2, qk_norm="rmsnorm", mixer=RecordingMixer)


@pytest.mark.parametrize(
    "placement, cls, hooks",
    [
        ("deepnorm", "DeepNormBlock", "init_weights"),
        ("ngpt", "NGPTBlock", "build_attention, init_weights"),
        ("normformer", "NormFormerBlock", "build_attention, attention_parts"),
        ("subln", "SubLNBlock", "attention_parts, init_weights"),
    ],
)
def test_a_mixer_plugin_is_refused_by_a_placement_that_customizes_attention(placement, cls, hooks):
    message = (
        f"mixer tests.blocks.test_block_construction.RecordingMixer replaces attention, but placement {cls} "
        f"customizes attention ({hooks}); use mixer 'attention' with it, or a placement that leaves attention alone "
        "(pre, post, peri, sandwich, mix, none, rezero, skipinit)"
    )
    with pytest.raises(normlight.PluginOptionError, match=re.escape(message)):
        get_placement(placement)(8, 2, mixer=RecordingMixer)


@pytest.mark.parametrize("placement", ["pre", "post", "peri", "sandwich", "mix", "none", "rezero", "skipinit"])
def test_the_placements_named_as_leaving_attention_alone_take_a_mixer_plugin(placement):
    assert isinstance(get_placement(placement)(8, 2, mixer=RecordingMixer).attn, RecordingMixer)


def test_a_residual_plugin_is_refused_by_a_placement_without_x_plus_f_of_x():
    message = (
        "residual 'gate' cannot apply to placement NGPTBlock: it has no x + F(x) to replace; use residual 'add' with it"
    )
    with pytest.raises(normlight.PluginOptionError, match=re.escape(message)):
        get_placement("ngpt")(8, 2, residual="gate")


def test_a_value_residual_is_refused_by_a_mixer_without_values():
    message = (
        "residual 'value_residual' mixes attention values, but mixer "
        "tests.blocks.test_block_construction.RecordingMixer has none; use mixer 'attention' with it"
    )
    with pytest.raises(normlight.PluginOptionError, match=re.escape(message)):
        get_placement("pre")(8, 2, residual="value_residual", mixer=RecordingMixer)


def test_the_head_scale_keeps_the_activation_dtype_under_autocast():
    # under bf16 autocast the heads come out of attention in bf16; a float32 head scale must not promote them
    attn = get_placement("pre")(8, 2, mixer_kwargs={"head_scale": True}).attn
    with torch.no_grad():
        attn.head_scale.copy_(torch.tensor([1.1, 0.7]))
    seen = []
    attn.out_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attn(torch.randn(2, 5, 8))
    assert seen == [torch.bfloat16]
