"""torchvision ResNet-18/50 weights in and out (normlight's resnet18/50 use torchvision's names unchanged).

In (``ref`` after ``torchvision:``):
    resnet18 | resnet50                 the DEFAULT weights of torchvision's enum (``ResNet50_Weights.DEFAULT``)
    resnet50:IMAGENET1K_V1              a named entry of that enum
    resnet50:<file>                     a local state_dict (``.pth`` read with weights_only=True, or .safetensors)
Enum weights come through ``torch.hub.load_state_dict_from_url(..., weights_only=True)``: from torch's hub
cache (``torch.hub.get_dir()/checkpoints``) when present, else downloaded. The state is first loaded strictly
into torchvision's own model, then mapped to normlight's ``resnet18``/``resnet50`` with ``norm="batchnorm"``
(BatchNorm2d's eps 1e-5) and the logits compared. ``num_classes`` different from the checkpoint's gives a
fresh classifier (``fc``), as timm does; every other tensor loads.

Out (``format="torchvision"``): ``torch.save(state_dict)`` after loading it into torchvision's model and
comparing logits; load it with ``torchvision.models.resnet50(num_classes=...).load_state_dict(torch.load(f))``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from normlight.errors import CheckpointError
from normlight.models.pretrained.common import (
    CNN_SIZE,
    check_same_outputs,
    example_images,
    floating_dtype,
    load_state,
    merge_settings,
    read_weights,
    short_list,
)

ARCHS = ("resnet18", "resnet50")


def fetch(arch: str, which: str, source: str) -> dict[str, torch.Tensor]:
    """The state_dict of a local file or of torchvision's weights enum entry ``which``."""
    import torchvision

    path = Path(which).expanduser()
    if path.is_file() or path.suffix in (".pth", ".pt", ".bin", ".safetensors") or "/" in which:
        if not path.is_file():
            raise CheckpointError(f"{source}: no such file {str(path)!r}")
        return read_weights(path, source)
    enum = torchvision.models.get_model_weights(arch)
    if which not in enum.__members__:
        raise CheckpointError(f"{source}: {arch} has no weights {which!r}; choose from {', '.join(enum.__members__)}")
    url = enum[which].url
    try:
        return torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:  # offline and not cached, corrupt download, ...
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        raise CheckpointError(
            f"{source}: could not get {arch} {which} weights ({type(exc).__name__}: {exc}); offline, put the file "
            f"at {cached} or pass torchvision:{arch}:<file>"
        ) from exc


def load(ref: str, model_kwargs: dict, source: str) -> nn.Module:
    """A normlight resnet18/resnet50 equal to torchvision's with the given weights."""
    import torchvision

    from normlight.models.factory import create_model

    arch, _, which = ref.partition(":")
    if arch not in ARCHS:
        raise CheckpointError(f"{source}: torchvision sources are {', '.join(ARCHS)}, got {arch!r}")
    state = fetch(arch, which or "DEFAULT", source)
    if "fc.weight" not in state:
        raise CheckpointError(f"{source}: not a torchvision {arch} state_dict (no fc.weight)")
    user = dict(model_kwargs)
    classes = int(user.pop("num_classes", state["fc.weight"].shape[0]))
    peer = getattr(torchvision.models, arch)(weights=None, num_classes=classes).to(floating_dtype(state))
    fresh = {"fc.weight", "fc.bias"} if classes != state["fc.weight"].shape[0] else set()
    state = {k: v for k, v in state.items() if k not in fresh}  # a new class count: torchvision's fresh fc
    result = peer.load_state_dict(state, strict=False)
    wrong = list(result.unexpected_keys) + [k for k in result.missing_keys if k not in fresh]
    if wrong:
        raise CheckpointError(f"{source}: the state_dict does not fit torchvision's {arch}: {short_list(wrong)}")
    model = create_model(arch, **merge_settings(dict(norm="batchnorm", num_classes=classes), user))
    load_state(model, peer.state_dict(), source)
    check_same_outputs(peer, model, example_images(3, CNN_SIZE, peer.fc.weight.dtype), source)
    return model


def export(model: nn.Module, path: Path) -> Path:
    """Write a normlight resnet18/resnet50 as a torchvision state_dict file; return the file."""
    import torchvision

    fmt = "torchvision"
    name = getattr(model, "spec", {}).get("name")
    if getattr(model, "family", None) != "resnet" or name not in ARCHS:
        raise CheckpointError(f"export {fmt}: only normlight resnet18 / resnet50 have torchvision's layout")
    if model.in_chans != 3:
        raise CheckpointError(f"export {fmt}: torchvision's ResNet takes 3 input channels, this one {model.in_chans}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    peer = getattr(torchvision.models, name)(weights=None, num_classes=model.num_classes).to(floating_dtype(state))
    try:
        peer.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"export {fmt}: torchvision's {name} does not take this state: {exc}") from exc
    device = next(model.parameters()).device
    x = example_images(3, CNN_SIZE, floating_dtype(state)).to(device)
    check_same_outputs(peer.to(device), model, x, f"export {fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
