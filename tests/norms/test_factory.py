"""create_norm: the channels-first adapter, layout-aware factories, the one-time probe on a copy."""

import pytest
import torch
from torch import nn

import normlight
from normlight.errors import PluginError
from normlight.norms import factory as norm_factory


def test_channels_first_adapter_for_channels_last_norms():
    norm = normlight.create_norm(nn.LayerNorm, 5, layout="channels_first", elementwise_affine=False)
    x = torch.randn(2, 5, 3, 4)
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (5,)).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), ref)


def test_factory_taking_layout_gets_it_and_is_not_wrapped():
    class Cf(nn.Module):
        def __init__(self, c, layout=None):
            super().__init__()
            self.layout = layout

        def forward(self, x):
            return x

    norm = normlight.create_norm(Cf, 3, layout="channels_first")
    assert isinstance(norm, Cf) and norm.layout == "channels_first"


def test_probe_runs_once_per_factory_on_a_copy():
    class Counting(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.register_buffer("running", torch.zeros(c))

        def forward(self, x):
            self.running += 1
            return x

    norm = normlight.create_norm(Counting, 3)
    assert torch.equal(norm.running, torch.zeros(3))
    assert (Counting, None) in norm_factory._probed


def test_probe_catches_callable_returning_wrong_shape():
    with pytest.raises(PluginError, match=r"returned \(2, 3, 2\) for an input of shape \(2, 3, 4\)"):
        normlight.create_norm(lambda c: nn.Linear(c, 2), 4)


def test_per_site_options_reach_their_site_and_unknown_sites_are_named():
    kwargs = {"alpha_init": 0.5, "sites": {"final": {"alpha_init": 0.2}, "attn_in": {"alpha_init": 0.8}}}
    model = normlight.create_model("gpt-nano", norm="dyt", norm_kwargs=kwargs)
    assert model.norm.alpha.item() == pytest.approx(0.2)
    assert [b.norm1.alpha.item() for b in model.blocks] == pytest.approx([0.8, 0.8])
    assert [b.norm2.alpha.item() for b in model.blocks] == pytest.approx([0.5, 0.5])  # shared option
    with pytest.raises(normlight.PluginOptionError, match=r"'fnal'.*attn_in, final, mlp_in"):
        normlight.create_model("gpt-nano", norm="dyt", norm_kwargs={"sites": {"fnal": {"alpha_init": 0.2}}})
    # peri builds attn_out/mlp_out too; post builds no final norm, so "final" is unknown there
    normlight.create_model("gpt-nano", norm="dyt", placement="peri", norm_kwargs={"sites": {"mlp_out": {}}})
    with pytest.raises(normlight.PluginOptionError, match=r"norm_kwargs.sites names 'final'.*sites attn_in, mlp_in;"):
        normlight.create_model("gpt-nano", norm="dyt", placement="post", norm_kwargs={"sites": {"final": {}}})
    with pytest.raises(normlight.PluginOptionError, match="must map site names to option dicts"):
        normlight.create_norm("dyt", 4, site="final", sites={"final": 0.2})


def test_norm_scope_offers_the_schedule_by_signature_and_records_what_was_built():
    seen = []

    def factory(num_features, total_steps=None, warmup_steps=None, site=None):
        seen.append((site, total_steps, warmup_steps))
        return nn.Identity()

    plain = normlight.create_norm(nn.LayerNorm, 4)  # takes no schedule: nothing passed, nothing asked
    assert isinstance(plain, nn.LayerNorm)
    with norm_factory.norm_scope(total_steps=100, warmup_steps=5) as outer:
        with norm_factory.norm_scope(warmup_steps=7) as inner:
            normlight.create_norm(factory, 4, site="final")
            normlight.create_norm(factory, 4, site="qk", total_steps=9)  # explicit wins
            normlight.create_norm(nn.LayerNorm, 4, site="attn_in")
    assert seen == [("final", 100, 7), ("qk", 9, 7)]
    assert [(r.site, sorted(r.schedule_keys)) for r in inner.records] == [
        ("final", ["total_steps", "warmup_steps"]),
        ("qk", ["total_steps", "warmup_steps"]),
        ("attn_in", []),
    ]
    assert outer.records == inner.records
    with pytest.raises(normlight.PluginOptionError, match="unknown context key"):
        with norm_factory.norm_scope(steps=3):
            pass


@pytest.mark.parametrize("name", normlight.list_norms())
def test_bias_false_removes_every_norms_shift(name):
    """``bias=False`` works for every norm: no parameter named bias/beta remains (none in the state_dict),
    and the output equals the norm built with its (zero-initialized) shift."""
    opts = {"num_groups": 4} if name in ("bcn", "evonorm_s0", "groupnorm") else {}
    ctx = {"layer_idx": 0, "num_layers": 2}
    torch.manual_seed(0)
    with_bias = normlight.create_norm(name, 8, **ctx, **opts)
    torch.manual_seed(0)
    without = normlight.create_norm(name, 8, bias=False, **ctx, **opts)
    shifts = [n for n, _ in with_bias.named_parameters() if n.rsplit(".", 1)[-1] in norm_factory.BIAS_NAMES]
    assert not [n for n, _ in without.named_parameters() if n.rsplit(".", 1)[-1] in norm_factory.BIAS_NAMES]
    assert not [k for k in without.state_dict() if k.rsplit(".", 1)[-1] in norm_factory.BIAS_NAMES]
    kept = {k: v for k, v in with_bias.state_dict().items() if k.rsplit(".", 1)[-1] not in norm_factory.BIAS_NAMES}
    assert set(kept) == set(without.state_dict())
    x = torch.randn(4, 3, 8)
    with_bias.eval(), without.eval()
    torch.testing.assert_close(without(x), with_bias(x))
    if name in ("layernorm", "batchnorm", "dyt", "grn", "prepbn", "powernorm", "unifiednorm"):
        assert shifts  # these do have a shift to remove
