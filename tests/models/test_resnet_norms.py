"""Every registered norm in every ResNet variant builds and trains a step; micro-batch behaviour; EvoNorm
replaces the norm + ReLU pair."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import normlight
from normlight import create_model
from normlight.errors import PluginError
from normlight.registry import lookup

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def require_norm(name):
    """Skip (not fail) only when a built-in norm's module has not been written yet."""
    entry = lookup("norms", name)
    try:
        entry.load()
    except PluginError as exc:
        cause = exc.__cause__
        if (
            entry.dist == "normlight"
            and isinstance(cause, ModuleNotFoundError)
            and (cause.name or "").startswith("normlight.")
        ):
            pytest.skip(f"built-in norm {name!r} not written yet ({entry.value})")
        raise


def train_step(model, batch=4, size=8, steps=1):
    """One SGD step on random images; returns the losses (before each step)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, model.in_chans, size, size, generator=g)
    y = torch.randint(0, model.num_classes, (batch,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("variant", ["standard", "preact"])
@pytest.mark.parametrize("norm", normlight.list_norms())
def test_every_norm_in_every_normed_variant(norm, variant):
    check_norm_trains(norm, variant, ws=False)


# WS convs have unit-variance weights (not He-scaled): they need a norm that rescales activations;
# with identity or an identity-at-init norm (grn) the signal explodes, as it should
@pytest.mark.parametrize("variant", ["standard", "preact"])
@pytest.mark.parametrize("norm", ["groupnorm", "bcn", "batchnorm", "evonorm_s0"])
def test_weight_standardization_with_norms(norm, variant):
    check_norm_trains(norm, variant, ws=True)


def check_norm_trains(norm, variant, ws):
    """Build resnet20 with ``norm``, find the plugin's modules in it, train a step with a finite loss."""
    require_norm(norm)
    torch.manual_seed(0)
    # width 2: 32-64-128 channels, so 32-group norms (groupnorm, bcn, evonorm_s0) divide them
    model = create_model("resnet20", norm=norm, variant=variant, weight_standardization=ws, width=2.0, num_classes=5)
    if ws:
        assert all(type(m) is not torch.nn.Conv2d for m in model.modules())
    factory = lookup("norms", norm).load()
    built = [m for m in model.modules() if isinstance(factory, type) and isinstance(m, factory)]
    assert built or not isinstance(factory, type), f"no {norm} module in the model"
    (loss,) = train_step(model)
    assert math.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 8, 8))).all()


@pytest.mark.parametrize("variant", ["fixup", "nf"])
@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_normfree_variants_train(name, variant):
    torch.manual_seed(0)
    kw = dict(width=2.0) if name == "resnet20" else dict(width=0.25)
    model = create_model(name, variant=variant, num_classes=5, **kw)
    losses = train_step(model, size=16, steps=3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("variant", ["standard", "preact"])
@pytest.mark.parametrize("norm", ["batchnorm", "groupnorm"])
def test_bottleneck_variants_train(norm, variant):
    require_norm(norm)
    torch.manual_seed(0)
    model = create_model("resnet50", norm=norm, variant=variant, width=0.5, num_classes=5, zero_init_last=True)
    losses = train_step(model, size=32, steps=2)
    assert all(math.isfinite(v) for v in losses)


def test_micro_batch_batchnorm_warns():
    model = create_model("resnet20", norm="batchnorm", width=2.0)
    with pytest.warns(UserWarning, match="batch size 1"):
        train_step(model, batch=1)


@pytest.mark.parametrize(
    "norm,kw",
    [("groupnorm", dict(weight_standardization=True)), ("bcn", {}), ("evonorm_s0", {}), (None, dict(variant="nf"))],
    ids=["groupnorm+ws", "bcn", "evonorm_s0", "nf"],
)
def test_micro_batch_alternatives_train(norm, kw):
    if norm:
        require_norm(norm)
    torch.manual_seed(0)
    model = create_model("resnet20", norm=norm, width=2.0, num_classes=5, **kw)
    with warnings.catch_warnings():
        if norm in ("groupnorm", None):  # batch-independent: nothing to warn about
            warnings.simplefilter("error")
        losses = train_step(model, batch=1, size=16, steps=3)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]


def test_evonorm_replaces_norm_and_relu():
    require_norm("evonorm_s0")
    evo = create_model("resnet20", norm="evonorm_s0", width=2.0)
    bn = create_model("resnet20", norm="batchnorm", width=2.0)
    assert isinstance(bn.blocks[0].act1, torch.nn.ReLU) and isinstance(bn.relu, torch.nn.ReLU)
    assert isinstance(evo.blocks[0].act1, torch.nn.Identity) and isinstance(evo.relu, torch.nn.Identity)
    pre = create_model("resnet20", norm="evonorm_s0", variant="preact", width=2.0)
    assert isinstance(pre.blocks[0].act1, torch.nn.Identity) and isinstance(pre.act_final, torch.nn.Identity)


def test_zero_init_last_and_weightless_norms():
    model = create_model("resnet20", norm="batchnorm", zero_init_last=True)
    assert all(bool((blk.bn2.weight == 0).all()) for blk in model.blocks)
    # a norm without affine weights is tolerated (nothing to zero), preact zeroes its last conv instead
    create_model("resnet20", norm="batchnorm", norm_kwargs={"affine": False}, zero_init_last=True)
    pre = create_model("resnet20", norm="batchnorm", variant="preact", zero_init_last=True)
    assert all(bool((blk.conv2.weight == 0).all()) for blk in pre.blocks)


def test_model_interface_and_spec():
    model = create_model("resnet56", norm="groupnorm", norm_kwargs={"num_groups": 8}, width=1.0, num_classes=3)
    assert model.family == "resnet" and model.placement_cls is None
    assert len(model.blocks) == 27 and "blocks" not in dict(model.named_children())
    assert (model.num_classes, model.in_chans, model.img_size) == (3, 3, 32)
    assert model.spec["name"] == "resnet56" and model.spec["norm"] == "groupnorm"
    assert model.spec["norm_kwargs"] == {"num_groups": 8} and model.spec["variant"] == "standard"
    rebuilt = create_model(
        model.spec["name"], **{k: v for k, v in model.spec.items() if k not in ("name", "placement")}
    )
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match=r"images of shape \(N, 3, H, W\)"):
        model(torch.randn(2, 1, 8, 8))


def test_context_passed_to_depth_aware_norms():
    seen = []

    def spy(num_features, layer_idx=None, num_layers=None, site=None, layout=None):
        seen.append((layer_idx, num_layers, site, layout))
        return torch.nn.BatchNorm2d(num_features)

    create_model("resnet20", norm=spy)
    assert {s[1:] for s in seen} == {(9, "conv", "channels_first")}
    assert sorted({s[0] for s in seen}) == list(range(9))


def test_bf16_forward():
    model = create_model("resnet20", norm="groupnorm", norm_kwargs={"num_groups": 4}).to(torch.bfloat16)
    out = model(torch.randn(2, 3, 16, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    nf = create_model("resnet20", variant="nf").to(torch.bfloat16)
    assert torch.isfinite(nf(torch.randn(2, 3, 16, 16, dtype=torch.bfloat16)).float()).all()
