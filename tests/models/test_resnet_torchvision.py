"""resnet18/50 with norm="batchnorm" are torchvision's networks: same parameter names, count and output."""

import pytest
import torch
import torchvision

from normlight import create_model


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter and running statistic distinct random values (so a swapped tensor shows)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            r = torch.rand(t.shape, generator=g)
            t.copy_(0.5 + r if name.endswith("running_var") else (r - 0.5) * 0.2)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_matches_torchvision(name):
    ours = create_model(name, norm="batchnorm", num_classes=7)
    ref = getattr(torchvision.models, name)(weights=None, num_classes=7)
    assert list(ours.state_dict()) == list(ref.state_dict())  # same names, same order
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    randomize(ref, 0)
    ours.load_state_dict(ref.state_dict())
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert got.shape == (2, 7)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().max() > 1e-2  # a real signal, not two zero outputs


def test_resnet18_param_count_is_torchvision():
    # the published ResNet-18 size, independent of torchvision's code
    assert sum(p.numel() for p in create_model("resnet18", norm="batchnorm").parameters()) == 11_689_512
