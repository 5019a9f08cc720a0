"""normlight.fold: eval-mode batch-statistic norms merged into the adjacent conv/linear, output unchanged."""

import pytest
import torch
import torchvision
from torch import nn

import normlight
from normlight.layers.ws import WSConv2d
from normlight.models.fold import (
    _flatten,
    _into_following,
    _into_preceding,
    consumers,
    is_batch_stat_norm,
    make_example_input,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def warm_stats(model, shape, steps=3):
    """Training-mode forwards so running statistics are far from their (0, 1) init."""
    model.train()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(*shape, generator=g) * 3 + 1)
    return model


def count_norms(model):
    return sum(1 for m in model.modules() if is_batch_stat_norm(m))


def assert_same(model, folded, x):
    model.eval()
    with torch.no_grad():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("resnet18", {}),
        ("resnet50", dict(width=0.25)),
        # WS convs have unit-variance kernels: cumulative running stats keep eval logits O(1)
        ("resnet20", dict(weight_standardization=True, norm_kwargs={"momentum": None})),
    ],
)
def test_fold_resnet_batchnorm(name, kw):
    torch.manual_seed(0)
    model = warm_stats(normlight.create_model(name, norm="batchnorm", num_classes=10, **kw), (8, 3, 32, 32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_norms = count_norms(model)
    folded = normlight.fold(model)
    assert len(folded.folded_norms) == n_norms and count_norms(folded) == 0
    assert not folded.training and model.training  # a copy in eval mode; the original keeps its mode
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    assert_same(model, folded, torch.randn(4, 3, 32, 32))
    if kw.get("weight_standardization"):
        assert not any(isinstance(m, WSConv2d) for m in folded.modules())  # kernels baked
    assert folded.family == "resnet" and len(folded.blocks) == len(model.blocks)


def test_fold_torch_batchnorm2d_torchvision():
    torch.manual_seed(0)
    model = warm_stats(torchvision.models.resnet18(weights=None, num_classes=10), (8, 3, 32, 32))
    folded = normlight.fold(model, torch.randn(2, 3, 32, 32))
    assert len(folded.folded_norms) == 20
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert_same(model, folded, torch.randn(4, 3, 32, 32))


def test_fold_repbn_into_following_linears():
    torch.manual_seed(0)
    model = warm_stats(normlight.create_model("vit-tiny", norm="repbn", depth=2, dim=64, num_heads=2), (8, 3, 32, 32))
    folded = normlight.fold(model)
    # pre-norm: the two norms of each block read the residual stream and feed only linears -> folded
    assert len(folded.folded_norms) == 4
    assert_same(model, folded, torch.randn(4, 3, 32, 32))


def test_fold_linear_batchnorm1d_and_preact():
    torch.manual_seed(0)
    mlp = warm_stats(nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)), (16, 5))
    folded = normlight.fold(mlp, torch.randn(4, 5))
    assert folded.folded_norms == ["1"] and isinstance(folded[1], nn.Identity) and folded[0].bias is not None
    assert_same(mlp, folded, torch.randn(6, 5))
    pre = warm_stats(normlight.create_model("resnet20", norm="batchnorm", variant="preact"), (8, 3, 16, 16))
    folded = normlight.fold(pre)
    # bn2 follows conv1 and folds; bn1 and the final norm read the residual stream and stay
    assert sorted(folded.folded_norms) == sorted(
        f"{b}.bn2"
        for b in (
            "layer1.0",
            "layer1.1",
            "layer1.2",
            "layer2.0",
            "layer2.1",
            "layer2.2",
            "layer3.0",
            "layer3.1",
            "layer3.2",
        )
    )
    assert_same(pre, folded, torch.randn(4, 3, 16, 16))


class SharedOutput(nn.Module):
    """conv output read by the norm AND by the sum: folding the norm into the conv would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_fold_leaves_what_cannot_be_folded():
    torch.manual_seed(0)
    shared = warm_stats(SharedOutput(), (4, 3, 8, 8))
    folded = normlight.fold(shared, torch.randn(2, 3, 8, 8))
    assert folded.folded_norms == [] and isinstance(folded.bn, nn.BatchNorm2d)
    assert_same(shared, folded, torch.randn(2, 3, 8, 8))
    # powernorm's eval map divides by a per-token group RMS first: not a per-channel affine, not folded
    pn = warm_stats(
        normlight.create_model("resnet20", norm="powernorm", norm_kwargs={"warmup_iters": 1}), (4, 3, 16, 16)
    )
    folded = normlight.fold(pn)
    assert folded.folded_norms == [] and count_norms(folded) == count_norms(pn)


def test_fold_needs_an_input_for_unknown_models():
    with pytest.raises(normlight.NormlightError, match="example_input"):
        normlight.fold(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))


def test_fold_gpt_keeps_tied_head_untouched():
    torch.manual_seed(0)
    model = normlight.create_model("gpt-nano", norm="batchnorm")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randint(0, model.vocab_size, (4, 16)))
    folded = normlight.fold(model)
    # block norms fold into the qkv / fc linears; the final norm feeds the lm_head tied to the embedding: kept
    assert len(folded.folded_norms) == 2 * len(model.blocks)
    model.eval()
    x = torch.randint(0, model.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layer,bn,shape",
    [
        (nn.Conv1d(3, 4, 3, padding=1, bias=True), nn.BatchNorm1d(4), (2, 3, 7)),
        (nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4), (2, 3, 5, 5)),
        (nn.Linear(5, 4, bias=True), nn.BatchNorm1d(4), (2, 5)),
    ],
    ids=["conv1d", "conv2d", "linear"],
)
def test_fold_into_a_preceding_layer_with_bias(layer, bn, shape):
    """The layer's own bias c is scaled with the kernel: b' = a (c - mean) + beta, a = gamma / sqrt(var + eps)."""
    torch.manual_seed(0)
    with torch.no_grad():  # running statistics and affine far from their (0, 1) init, a bias far from 0
        layer.bias.uniform_(-3.0, 3.0)
        bn.running_mean.uniform_(-2.0, 2.0)
        bn.running_var.uniform_(0.05, 4.0)
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
    model = nn.Sequential(layer, bn)
    folded = normlight.fold(model, torch.randn(*shape))
    assert folded.folded_norms == ["1"] and isinstance(folded[1], nn.Identity)
    a = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    want_w = layer.weight.detach() * a.view(-1, *[1] * (layer.weight.ndim - 1))
    want_b = a * (layer.bias.detach() - bn.running_mean) + bn.bias.detach()
    torch.testing.assert_close(folded[0].weight.detach(), want_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(folded[0].bias.detach(), want_b, rtol=1e-5, atol=1e-6)
    assert_same(model, folded, torch.randn(*shape))


class Interface(nn.Module):
    """Only the attributes make_example_input reads, and optionally one parameter (its device and dtype)."""

    def __init__(self, param=None, **attrs):
        super().__init__()
        self.__dict__.update(attrs)
        if param is not None:
            self.p = nn.Parameter(param, requires_grad=param.is_floating_point())


def test_example_input_follows_the_model_interface_device_and_dtype():
    gpt = make_example_input(Interface(torch.zeros(1), family="gpt", vocab_size=1, max_seq_len=50))
    assert gpt.shape == (2, 8) and gpt.dtype == torch.long and gpt.eq(0).all()  # ids in [0, vocab_size)
    assert make_example_input(Interface(family="gpt", vocab_size=7, max_seq_len=3)).shape == (2, 3)  # no params
    on_meta = make_example_input(Interface(torch.zeros(1, device="meta"), family="gpt", vocab_size=7, max_seq_len=9))
    assert on_meta.device.type == "meta"

    img = make_example_input(Interface(torch.zeros(1, dtype=torch.float64), in_chans=2, img_size=(4, 6)))
    assert img.shape == (2, 2, 4, 6) and img.dtype == torch.float64
    img = make_example_input(Interface(torch.zeros(1, device="meta", dtype=torch.bfloat16), in_chans=1, img_size=5))
    assert img.shape == (2, 1, 5, 5) and img.device.type == "meta" and img.dtype == torch.bfloat16
    img = make_example_input(Interface(torch.zeros(1, dtype=torch.long), in_chans=3, img_size=2))
    assert img.dtype == torch.float32  # an integer parameter says nothing about the input dtype
    assert make_example_input(Interface(in_chans=3, img_size=2)).dtype == torch.float32
    with pytest.raises(normlight.NormlightError, match=r"for Interface \(it has no family/img_size/vocab_size attr"):
        make_example_input(Interface(in_chans=3))  # img_size missing


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_fold_arithmetic_keeps_the_layer_dtype_and_device(device):
    """A bf16 model whose norm measured a, b in float32: the folded weights and biases stay bf16 on the device."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, generator=g) + 0.5, torch.randn(4, generator=g)
    for bias in (False, True):
        conv = nn.Conv2d(3, 4, 1, bias=bias).to(torch.bfloat16)
        model = nn.Sequential(conv)
        w0, c0 = conv.weight.detach().double(), (conv.bias.detach().double() if bias else torch.zeros(4).double())
        _into_preceding(model.to(device), "0", model[0], a.to(device), b.to(device))
        assert model[0].weight.dtype == model[0].bias.dtype == torch.bfloat16
        assert model[0].weight.device.type == model[0].bias.device.type == device
        if device == "cpu":
            torch.testing.assert_close(model[0].bias.double(), a.double() * c0 + b.double(), rtol=1e-2, atol=1e-2)
            want = w0 * a.double().view(-1, 1, 1, 1)
            torch.testing.assert_close(model[0].weight.double(), want, rtol=1e-2, atol=1e-2)

        lin = nn.Linear(4, 3, bias=bias).to(torch.bfloat16)
        w0, c0 = lin.weight.detach().double(), (lin.bias.detach().double() if bias else torch.zeros(3).double())
        lin.to(device)
        _into_following(lin, a.to(device), b.to(device))
        assert lin.weight.dtype == lin.bias.dtype == torch.bfloat16 and lin.bias.shape == (3,)
        assert lin.weight.device.type == lin.bias.device.type == device
        if device == "cpu":
            torch.testing.assert_close(lin.bias.double(), w0 @ b.double() + c0, rtol=1e-2, atol=2e-2)
            torch.testing.assert_close(lin.weight.double(), w0 * a.double(), rtol=1e-2, atol=1e-2)


def test_consumers_lists_every_reader_of_a_shared_node():
    x = torch.randn(3, requires_grad=True)
    t = x * 2
    out = t.sin() + t.cos() + t
    readers = consumers(out)
    assert len(readers[t.grad_fn]) == 3  # sin, cos and the second add: every one, however the walk meets them
    assert len(consumers([{"a": out}, (t.exp(),)])[t.grad_fn]) == 4  # roots found inside lists, dicts, tuples


class TwoOutputs(nn.Module):
    """A norm output read by a linear AND returned: folding it into the linear would change the second output."""

    def __init__(self):
        super().__init__()
        self.bn, self.fc = nn.BatchNorm1d(4), nn.Linear(4, 4)

    def forward(self, x):
        h = self.bn(x)
        return [self.fc(h) + h, {"h": h.sum(-1)}]


class Reused(nn.Module):
    """One BatchNorm module called after two different linears: no single layer can absorb it."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.bn = nn.Linear(4, 4), nn.Linear(4, 4), nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.b(torch.relu(self.bn(self.a(x)))))


class Masked(nn.Module):
    """A norm called with a padding mask: an nn.Identity in its place could not take the mask."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = normlight.create_norm("repbn", 4)
        self.head = Keywords()

    def forward(self, x):
        return self.head(y=self.norm(self.fc(x), mask=torch.ones(x.shape[:-1], dtype=torch.bool)))


class Keywords(nn.Module):
    """A module called with keyword arguments only (no positional input)."""

    def forward(self, *, y):
        return y * 2


class ReusedHead(nn.Module):
    """The linear after the norm is called twice (also on the raw input): it cannot absorb the norm."""

    def __init__(self):
        super().__init__()
        self.bn, self.fc = nn.BatchNorm1d(4), nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.bn(x)) + self.fc(x)


class ScaledConv(nn.Conv2d):
    """A conv whose forward is not plain ``W x + b``: nothing may be folded into it."""

    def forward(self, x):
        return 2 * super().forward(x) + 1


class AfterScaledConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = ScaledConv(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x))


class ConvReturned(nn.Module):
    """The conv's own output is returned next to its normalized version: folding the norm into the conv would
    change the first output."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        h = self.conv(x)
        return h, self.bn(h)


@pytest.mark.parametrize("model_cls", [TwoOutputs, Reused, Masked, ReusedHead, AfterScaledConv, ConvReturned])
def test_fold_leaves_norms_read_elsewhere_reused_or_called_with_a_mask(model_cls):
    torch.manual_seed(0)
    shape = {Masked: (8, 3, 4), AfterScaledConv: (8, 3, 2, 2), ConvReturned: (8, 3, 2, 2)}.get(model_cls, (8, 4))
    model = warm_stats(model_cls(), shape)
    folded = normlight.fold(model, torch.randn(*shape))
    assert folded.folded_norms == []
    x = torch.randn(*shape)
    model.eval()
    with torch.no_grad():
        for want, got in zip(_flatten(model(x)), _flatten(folded(x))):
            torch.testing.assert_close(got, want)


def test_fold_a_norm_that_holds_another_folds_the_outer_one_once():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), normlight.create_norm("prepbn", 6, warmup_steps=0, total_steps=2))
    warm_stats(model, (8, 5, 4), steps=4)
    assert [n for n, m in model.named_modules() if is_batch_stat_norm(m)] == ["1", "1.norm2", "1.norm2.bn"]
    folded = normlight.fold(model, torch.randn(2, 5, 4))
    assert folded.folded_norms == ["1"] and isinstance(folded[1], nn.Identity)
    assert_same(model, folded, torch.randn(3, 5, 4))


class Chain(nn.Module):
    """Four norms in a row: one read elsewhere, one not affine in eval, one after a linear, one before one."""

    def __init__(self):
        super().__init__()
        self.bn0, self.fc0 = nn.BatchNorm1d(4), nn.Linear(4, 4)
        self.pn, self.fc1 = normlight.create_norm("powernorm", 4, warmup_iters=1), nn.Linear(4, 4)
        self.bn1, self.bn2, self.fc2 = nn.BatchNorm1d(4), nn.BatchNorm1d(4), nn.Linear(4, 3)

    def forward(self, x):
        a = self.bn0(x)
        h = self.bn1(self.fc1(self.pn(self.fc0(a) + a)))
        return self.fc2(self.bn2(torch.relu(h)))


def test_fold_goes_on_past_norms_it_leaves():
    torch.manual_seed(0)
    model = warm_stats(Chain(), (16, 4), steps=4)
    folded = normlight.fold(model, torch.randn(4, 4))
    assert folded.folded_norms == ["bn1", "bn2"]  # bn1 into fc1 (before it), bn2 into fc2 (after it)
    assert isinstance(folded.bn0, nn.BatchNorm1d) and isinstance(folded.bn2, nn.Identity)
    assert_same(model, folded, torch.randn(6, 4))


def test_fold_refuses_to_return_a_model_whose_output_changed(monkeypatch):
    """The last line of defence: an internal folding bug (here a dropped bias) is an error, not a silent change."""
    from normlight.models import fold as fold_module

    def drop_bias(model, layer_name, layer, a, b):
        with torch.no_grad():
            layer.weight.mul_(a.view(-1, *[1] * (layer.weight.ndim - 1)))
            layer.bias = None

    monkeypatch.setattr(fold_module, "_into_preceding", drop_bias)
    model = warm_stats(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), (16, 4))
    lin, bn = model
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    lost = (a * (lin.bias - bn.running_mean) + bn.bias).abs().max().item()  # the dropped folded bias
    with pytest.raises(
        normlight.NormlightError, match=r"fold: the folded Sequential differs from the original by"
    ) as e:
        normlight.fold(model, torch.randn(4, 4))
    assert float(str(e.value).split(" by ")[1].split(";")[0]) == pytest.approx(lost, rel=2e-3)


def test_fold_refuses_an_output_off_by_one_percent(monkeypatch):
    """The final comparison's tolerance is tight (rtol 1e-4): a folding bug that scales the output by 1.01 is refused."""
    from normlight.models import fold as fold_module

    real = fold_module._into_preceding

    def off_by_one_percent(model, layer_name, layer, a, b):
        real(model, layer_name, layer, a * 1.01, b * 1.01)

    monkeypatch.setattr(fold_module, "_into_preceding", off_by_one_percent)
    model = warm_stats(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), (16, 4))
    with pytest.raises(normlight.NormlightError, match=r"fold: the folded Sequential differs from the original by"):
        normlight.fold(model, torch.randn(4, 4))


def test_fold_handles_norms_whose_output_the_model_drops():
    class Dropped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)  # conv -> BN, result dropped
            self.bn1d, self.fc = nn.BatchNorm1d(6), nn.Linear(6, 5)  # BN -> linear, result dropped
            self.head = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            self.bn(self.conv(x))
            self.fc(self.bn1d(torch.flatten(x, 1)[:, :6]))
            return self.head(x)

    model = warm_stats(Dropped(), (4, 3, 6, 6))
    x = torch.randn(2, 3, 6, 6)
    folded = normlight.fold(model, example_input=x)
    assert sorted(folded.folded_norms) == ["bn", "bn1d"]  # nothing the output depends on reads them
    torch.testing.assert_close(folded(x), model.eval()(x))
