"""What every pretrained source shares: safe reading of weight files, settings merged with the user's, the
strict load (every key placed, every shape equal) and the output check against the peer's own model.

Nothing here unpickles Python objects: ``.safetensors`` files hold tensors only and any other file is read
with ``torch.load(weights_only=True)``, which accepts tensors, containers and plain numbers and refuses the rest.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from normlight.errors import CheckpointError


def short_list(names: Iterable[str], limit: int = 8) -> str:
    """``a, b, c`` or ``a, b, ... (+12 more)``: the first few of a list of keys for an error message."""
    names = list(names)
    head = ", ".join(names[:limit])
    return head if len(names) <= limit else f"{head}, ... (+{len(names) - limit} more)"


def existing_file(path: str | Path, source: str) -> Path:
    """``path`` as a Path if it is a file, else a clear error naming the source."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"{source}: no such file {str(p)!r}")
    return p


def read_torch(path: Path, source: str) -> Any:
    """The object in a torch file, read with ``weights_only=True`` (tensors, containers, numbers; no code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{source}: {path} holds Python objects beyond tensors and plain containers, and normlight never "
            f"unpickles those (weights_only=True refused: {first}); save the weights as a plain state_dict or "
            "as .safetensors"
        ) from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise CheckpointError(f"{source}: cannot read {path} as a torch file: {exc}") from exc


def read_safetensors(path: Path, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError
        raise CheckpointError(f"{source}: cannot read {path} as safetensors: {exc}") from exc


def read_weights(path: Path, source: str) -> dict[str, torch.Tensor]:
    """A flat name -> tensor mapping from ``.safetensors`` or a torch state_dict file."""
    state = read_safetensors(path, source) if path.suffix == ".safetensors" else read_torch(path, source)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: {path} is not a flat state_dict (a mapping of names to tensors)")
    return dict(state)


def strip_prefixes(state: Mapping[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    """Keys without wrapper prefixes (``_orig_mod.`` from torch.compile, ``module.`` from DDP), in any order."""
    out = {}
    for key, value in state.items():
        while key.startswith(prefixes):
            key = key[len(next(p for p in prefixes if key.startswith(p))) :]
        out[key] = value
    return out


def merge_settings(settings: dict, user: dict) -> dict:
    """The source's model settings overridden by the user's; ``*_kwargs`` dicts are merged key by key, except
    that another ``norm`` than the source's drops the source's ``norm_kwargs`` (they belong to its norm)."""
    out = dict(settings)
    if "norm" in user and user["norm"] != out.get("norm"):
        out.pop("norm_kwargs", None)
    for key, value in user.items():
        if key.endswith("_kwargs") and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def floating_dtype(state: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The one floating dtype of the checkpoint's tensors (float32 if they mix several)."""
    kinds = {t.dtype for t in state.values() if t.is_floating_point()}
    return kinds.pop() if len(kinds) == 1 else torch.float32


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` (normlight names) into ``model`` strictly; the model takes the checkpoint's dtype.

    Every model key must be filled and every checkpoint key placed, with equal shapes; otherwise one
    error names the keys at fault.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    ]
    problems = []
    if extra:
        problems.append(f"checkpoint tensors with no place in the model: {short_list(extra)}")
    if missing:
        problems.append(f"model tensors the checkpoint does not fill: {short_list(missing)}")
    if shapes:
        problems.append(f"shapes differ (checkpoint vs model): {short_list(shapes, 4)}")
    if problems:
        raise CheckpointError(
            f"{source}: the checkpoint does not fit the normlight model it maps to; "
            + "; ".join(problems)
            + ". Drop model options that change the architecture, or check the source"
        )
    model.to(floating_dtype(state))
    model.load_state_dict(state, strict=True)
    return model


CNN_SIZE = 16  # image side for the CNN output checks: any size works, small is cheap


def example_images(channels: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    """A fixed random batch of two images for the output checks."""
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0)).to(dtype)


def eval_outputs(ref: nn.Module, ours: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ref(x)`` and ``ours(x)`` in eval mode without gradients (the training flags are restored)."""
    modes = ref.training, ours.training
    ref.eval(), ours.eval()
    try:
        with torch.no_grad():
            return ref(x), ours(x)
    finally:
        ref.train(modes[0]), ours.train(modes[1])


def check_same_outputs(ref: nn.Module, ours: nn.Module, x: torch.Tensor, source: str) -> float:
    """Raise if the normlight model does not compute the peer's logits (up to float rounding); return max |d|."""
    a, b = eval_outputs(ref, ours, x)
    diff = float((a.double() - b.double()).abs().max())
    tol = 1e3 * torch.finfo(a.dtype).eps * (1.0 + float(a.double().abs().max()))
    if not diff <= tol:
        raise CheckpointError(
            f"{source}: every weight found its place, but the normlight model's logits differ from the source "
            f"model's by {diff:.3g} (tolerance {tol:.3g}): the source has a part normlight's model lacks"
        )
    return diff
