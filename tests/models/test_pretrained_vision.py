"""timm ViT / ResNet and torchvision ResNet in and out: each peer is built with random weights by its own library,
saved the way it saves checkpoints, loaded by normlight, compared in float64 (logits, loss, gradients), and
exported back into the peer's own loader."""

import argparse

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

from normlight import create_model
from normlight.errors import CheckpointError
from normlight.models import export_pretrained, load_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")
VIT = dict(img_size=32, patch_size=4, depth=2, num_classes=10)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Distinct random values in every tensor (norm scales near 1, positive running variances), float64, eval."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            r = torch.randn(t.shape, generator=g, dtype=t.dtype)
            if name.endswith("running_var"):
                t.copy_(0.5 + r.abs())
            elif t.ndim == 1 and ("norm" in name or ".bn" in name or name.startswith("bn")) and name.endswith("weight"):
                t.copy_(1 + 0.1 * r)
            else:
                t.copy_(0.05 * r)
    return model.double().eval()


def images(size, seed=1):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def assert_same(peer, ours, x, grads):
    """Logits, a cross-entropy loss and the named gradients agree to 1e-10 (float64)."""
    a, b = peer(x), ours(x)
    assert (a - b).abs().max() <= 1e-10 and a.abs().max() > 1e-3
    y = torch.arange(2) % a.shape[1]
    la, lb = F.cross_entropy(a, y), F.cross_entropy(b, y)
    assert abs(la.item() - lb.item()) <= 1e-10
    la.backward(), lb.backward()
    for p, q in grads():
        assert (p.grad - q.grad).abs().max() <= 1e-10


@pytest.fixture(scope="module")
def vit_files(tmp_path_factory):
    """A random timm ViT saved as safetensors and as a timm training checkpoint (with argparse args)."""
    path = tmp_path_factory.mktemp("vit")
    peer = randomize(timm.create_model("vit_tiny_patch16_224", pretrained=False, **VIT))
    save_file(peer.state_dict(), str(path / "model.safetensors"))
    ckpt = {"epoch": 3, "arch": "vit_tiny_patch16_224", "state_dict": peer.state_dict(), "args": argparse.Namespace()}
    torch.save(ckpt, path / "checkpoint.pth.tar")
    return peer, path


@pytest.mark.parametrize("file", ["model.safetensors", "checkpoint.pth.tar"])
def test_timm_vit(vit_files, file):
    peer, path = vit_files
    ours = load_pretrained(f"timm:vit_tiny_patch16_224:{path / file}", **VIT)
    assert ours.family == "vit" and ours.spec["norm_kwargs"] == {"eps": 1e-6}  # timm's ViT eps, from the model
    assert next(ours.parameters()).dtype == torch.float64
    ours.eval()
    peer.zero_grad()

    def grads():
        return [
            (peer.pos_embed, ours.pos_emb),
            (peer.blocks[1].attn.proj.weight, ours.blocks[1].attn.out_proj.weight),
            (peer.blocks[0].norm1.weight, ours.blocks[0].norm1.weight),
            (peer.patch_embed.proj.weight, ours.patch_embed.proj.weight),
        ]

    assert_same(peer, ours, images(32), grads)


def test_timm_vit_export_round_trip(vit_files, tmp_path):
    peer, path = vit_files
    ours = load_pretrained(f"timm:vit_tiny_patch16_224:{path / 'model.safetensors'}", **VIT).eval()
    out = export_pretrained(ours, tmp_path / "export", format="timm")
    back = timm.create_model(f"local-dir:{out}", pretrained=True, dtype=torch.float64).eval()
    x = images(32)
    assert (back(x) - peer(x)).abs().max() <= 1e-10
    again = load_pretrained(f"timm:local-dir:{out}", dtype=torch.float64).eval()
    assert (again(x) - peer(x)).abs().max() <= 1e-10
    with pytest.raises(
        CheckpointError, match="eps is 1e-06 and cannot be configured; this model.s norms use 1e-05"
    ):  # normlight's preset default
        export_pretrained(create_model("vit-tiny", depth=2), tmp_path / "eps", format="timm")
    with pytest.raises(CheckpointError, match="placement"):
        export_pretrained(create_model("vit-tiny", depth=2, placement="post"), tmp_path / "post", format="timm")


def test_timm_vit_new_head_and_refusals(vit_files, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    _, path = vit_files
    three = load_pretrained(f"timm:vit_tiny_patch16_224:{path / 'model.safetensors'}", **{**VIT, "num_classes": 3})
    assert three.num_classes == 3  # timm gives it a fresh classifier; everything else loads
    # a task passes its config's norm / placement along: agreeing ones are fine, others are refused
    file = f"timm:vit_tiny_patch16_224:{path / 'model.safetensors'}"
    assert load_pretrained(file, **VIT, norm="layernorm", placement="pre").spec["placement"] == "pre"
    with pytest.raises(CheckpointError, match="the timm model fixes .*'norm': 'layernorm'"):
        load_pretrained(file, **VIT, norm="batchnorm")
    with pytest.raises(CheckpointError, match="global_pool='avg'"):
        load_pretrained(
            f"timm:vit_tiny_patch16_224:{path / 'model.safetensors'}", **VIT, global_pool="avg", fc_norm=False
        )
    with pytest.raises(CheckpointError, match="did you mean 'vit_tiny_patch16_224'"):
        load_pretrained("timm:vit_tiny_patch16_22")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))  # an empty Hub cache, offline
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="timm could not load 'vit_tiny_patch16_224'.*offline"):
        load_pretrained("timm:vit_tiny_patch16_224")


def test_timm_resnet(tmp_path):
    peer = randomize(timm.create_model("resnet18", pretrained=False, num_classes=7))
    save_file(peer.state_dict(), str(tmp_path / "r18.safetensors"))
    ours = load_pretrained(f"timm:resnet18:{tmp_path / 'r18.safetensors'}")
    assert ours.spec["name"] == "resnet18" and ours.num_classes == 7
    ours.eval()

    def grads():
        return [(peer.conv1.weight, ours.conv1.weight), (peer.layer4[1].bn2.weight, ours.layer4[1].bn2.weight)]

    assert_same(peer, ours, images(16), grads)
    out = export_pretrained(ours, tmp_path / "export", format="timm")
    back = timm.create_model(f"local-dir:{out}", pretrained=True, dtype=torch.float64).eval()
    assert (back(images(16)) - peer(images(16))).abs().max() <= 1e-10
    save_file(timm.create_model("test_resnet", pretrained=False).state_dict(), str(tmp_path / "small.safetensors"))
    with pytest.raises(CheckpointError, match=r"only timm's plain resnet18.*this is BasicBlock x \[1, 1, 1, 1\]"):
        load_pretrained(f"timm:test_resnet:{tmp_path / 'small.safetensors'}")


def test_torchvision_resnet(tmp_path, monkeypatch):
    peer = randomize(torchvision.models.resnet18(weights=None))
    # the enum path reads torch's hub cache; seed it with a file under the real weights' file name
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(peer.state_dict(), tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1])
    ours = load_pretrained("torchvision:resnet18").eval()
    assert ours.num_classes == 1000

    def grads():
        return [(peer.fc.weight, ours.fc.weight), (peer.layer1[0].conv2.weight, ours.layer1[0].conv2.weight)]

    assert_same(peer, ours, images(16), grads)
    out = export_pretrained(ours, tmp_path / "r18.pth", format="torchvision")
    back = torchvision.models.resnet18(weights=None).double().eval()
    back.load_state_dict(torch.load(out, weights_only=True))
    assert (back(images(16)) - peer(images(16))).abs().max() <= 1e-10
    ten = load_pretrained(f"torchvision:resnet18:{out}", num_classes=10)  # a fresh classifier, the rest loaded
    assert ten.num_classes == 10 and torch.equal(ten.conv1.weight, ours.conv1.weight)
    with pytest.raises(CheckpointError, match="IMAGENET1K_V1"):
        load_pretrained("torchvision:resnet18:IMAGENET1K_V9")
    with pytest.raises(CheckpointError, match="resnet18, resnet50"):
        load_pretrained("torchvision:vgg16")
