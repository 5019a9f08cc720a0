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


def fresh(forward, **init):
    """A new norm class (so the probe, cached per factory, runs for it) whose forward is ``forward(self, x)``."""

    class Probed(nn.Module):
        def __init__(self, c, **kw):
            super().__init__()
            self.kw = kw
            self.scale = nn.Parameter(torch.ones(c, **init))

        def forward(self, x):
            return forward(self, x)

    return Probed


def test_probe_messages_name_the_norm_and_what_it_did():
    def boom(self, x):
        raise RuntimeError("boom")

    with pytest.raises(PluginError, match=r"^norm \S+ returned str; a norm factory must return a torch.nn.Module$"):
        normlight.create_norm(lambda c: "no module", 4)
    with pytest.raises(
        PluginError, match=r"^norm \S*Probed failed on a probe input of shape \(2, 3, 4\): RuntimeError: boom$"
    ):
        normlight.create_norm(fresh(boom), 4)
    with pytest.raises(
        PluginError, match=r"^norm \S*Probed returned tuple for an input of shape \(2, 3, 4\); a norm must return"
    ):
        normlight.create_norm(fresh(lambda self, x: (x,)), 4)
    with pytest.raises(
        PluginError, match=r"^norm \S*Probed returned non-finite values for a finite probe input of shape \(2, 3, 4\)$"
    ):
        normlight.create_norm(fresh(lambda self, x: x / 0), 4)


def test_probe_input_follows_the_norm_dtype_layout_and_leaves_the_global_rng_alone():
    seen = []

    def record(self, x):
        seen.append((x.dtype, tuple(x.shape)))
        return x * self.scale.reshape(-1, 1, 1) if self.kw.get("layout") == "channels_first" else x * self.scale

    torch.manual_seed(123)
    state = torch.get_rng_state()
    normlight.create_norm(fresh(record, dtype=torch.float64), 4)  # a float64 norm gets a float64 probe

    class ChannelsFirstNorm(fresh(record)):  # takes layout: built as is, probed on (N, C, H, W)
        def __init__(self, c, layout="channels_last"):
            super().__init__(c, layout=layout)

    normlight.create_norm(ChannelsFirstNorm, 5, layout="channels_first")
    assert seen == [(torch.float64, (2, 3, 4)), (torch.float32, (2, 5, 3, 3))]
    # the probe draws from its own generator: model init is the same whether or not a factory was probed before
    assert torch.equal(torch.get_rng_state(), state)


def test_check_site_overrides_counts_only_norms_built_from_these_options():
    from normlight.norms.factory import NormRecord, check_site_overrides

    sites = {"final": {}, "qk": {}}
    records = [
        NormRecord("final", nn.Identity(), sites),
        NormRecord("qk", nn.Identity(), None),  # built at qk, but from other options
        NormRecord(None, nn.Identity(), sites),  # no site
    ]
    with pytest.raises(
        normlight.PluginOptionError,
        match=r"^norm_kwargs.sites names 'qk', but this model builds its norms from norm_kwargs only at the sites "
        r"final; use one of those$",
    ):
        check_site_overrides({"sites": sites}, records)
    with pytest.raises(normlight.PluginOptionError, match=r"^qk_kwargs.sites names 'final', 'qk', .* sites \(none\);"):
        check_site_overrides({"sites": sites}, [], "qk_kwargs")
    check_site_overrides({"sites": {"final": {}}}, [NormRecord("final", nn.Identity(), {"final": {}})])


def test_drop_bias_returns_the_names_it_removed():
    inner = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4))
    assert norm_factory.drop_bias(inner) == ["0.bias", "1.bias"]
    assert norm_factory.drop_bias(nn.LayerNorm(4)) == ["bias"]


def test_create_norm_context_probe_cache_and_records():
    import functools

    got = {}

    def factory(num_features, num_layers=None, layout="channels_last", scale=1.0):
        got.update(num_layers=num_layers, layout=layout)
        return nn.Identity()

    with norm_factory.norm_scope(num_layers=3, layout="channels_first") as scope:
        module = normlight.create_norm(factory, 4, site="final")
        normlight.create_norm(factory, 4, num_layers=7)
    # an explicit num_layers wins over the scope's; a scope's layout never reaches a factory (create_norm's own)
    assert got == {"num_layers": 7, "layout": "channels_last"}
    assert scope.records[0].module is module and scope.records[0].site == "final"

    probes = []

    def counted(self, x):
        probes.append(1)
        return x

    cls = fresh(counted)
    normlight.create_norm(functools.partial(cls, alpha=1), 4)
    normlight.create_norm(functools.partial(cls, alpha=2), 4)  # another partial of the same class: probed once
    assert len(probes) == 1
