"""normlight.fold: eval-mode batch-statistic norms merged into the adjacent conv/linear, output unchanged."""

import pytest
import torch
import torchvision
from torch import nn

import normlight
from normlight.layers.ws import WSConv2d
from normlight.models.fold import is_batch_stat_norm

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
