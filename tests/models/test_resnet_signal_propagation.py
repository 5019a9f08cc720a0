"""Signal propagation at init, no training: residual-stream and gradient scale vs depth up to 998 layers.

Thin CIFAR ResNets (4-8-16 channels, 8x8 images). Expected shapes of the curves:
no norm + default (He) init explodes exponentially; Fixup and NF stay within a constant factor of the
shallow network; BatchNorm keeps the forward stream growing only like sqrt(depth) and the gradient
polynomially (BN divides every branch by its input's scale), never the exponential blow-up.
"""

import math

import pytest
import torch

from normlight.models.resnet import cifar_resnet

DEPTHS = (20, 110, 998)  # 6n+2 layers; 998 = 3 stages x 166 basic blocks


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def propagate(depth, skip_gain=None, **kw):
    """(std of the last residual stream, std of d(loss)/d(input)) at init, plus per-block input stds and betas."""
    torch.manual_seed(0)
    model = cifar_resnet(depth, width=0.25, num_classes=10, img_size=8, **kw)
    if skip_gain is not None:
        for blk in model.blocks:
            torch.nn.init.constant_(blk.skip_gain, skip_gain)
    seen = []
    for blk in model.blocks:
        blk.register_forward_pre_hook(
            lambda mod, args: seen.append((args[0].detach().std().item(), getattr(mod, "beta", 1.0)))
        )
    x = torch.randn(16, 3, 8, 8, requires_grad=True)
    h = model.conv1(x)
    if model.variant == "fixup":
        h = torch.relu(h + model.bias1)
    if model.variant == "standard":
        h = model.relu(model.bn1(h))
    for name in model.stage_names:
        h = getattr(model, name)(h)
    (h * torch.randn_like(h)).sum().backward()
    return h.detach().std().item(), x.grad.std().item(), seen


def curves(**kw):
    return {d: propagate(d, **kw) for d in DEPTHS}


def test_no_norm_default_init_explodes():
    c = curves(norm="identity")
    fwd20, grad20 = c[20][0], c[20][1]
    assert c[110][0] > 1e3 * fwd20 and c[110][1] > 1e3 * grad20
    fwd, grad = c[998][0], c[998][1]
    assert not math.isfinite(fwd) or fwd > 1e30
    assert not math.isfinite(grad) or grad > 1e30


def test_fixup_stays_bounded():
    c = curves(variant="fixup")
    for d in DEPTHS:
        fwd, grad, _ = c[d]
        assert 0.1 < fwd / c[20][0] < 10, (d, fwd)
        assert 0.1 < grad / c[20][1] < 10, (d, grad)


@pytest.mark.parametrize("skip_gain", [None, 1.0], ids=["skip_gain0_default", "skip_gain1"])
def test_nf_stays_bounded(skip_gain):
    c = curves(variant="nf", skip_gain=skip_gain)
    for d in DEPTHS:
        fwd, grad, seen = c[d]
        assert 0.05 < fwd / c[20][0] < 20, (d, fwd)
        assert 0.05 < grad / c[20][1] < 20, (d, grad)
        if skip_gain == 1.0:  # beta tracks the real scale: std(block input) * beta stays O(1) at every block
            ratios = [std * beta for std, beta in seen]
            assert 0.05 < min(ratios) and max(ratios) < 2, (d, min(ratios), max(ratios))


@pytest.mark.parametrize("variant", ["standard", "preact"])
def test_batchnorm_grows_at_most_polynomially(variant):
    c = curves(norm="batchnorm", variant=variant)
    depth_ratio = 998 / 20
    fwd, grad, _ = c[998]
    assert math.isfinite(fwd) and math.isfinite(grad)
    assert fwd / c[20][0] < 2 * math.sqrt(depth_ratio)  # ~sqrt(depth): every branch is unit-scale
    assert grad / c[20][1] < depth_ratio**2
