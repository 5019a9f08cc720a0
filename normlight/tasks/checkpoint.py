"""Reading normlight checkpoints safely, and refusing a resume that contradicts the checkpoint.

A checkpoint is a pickle: loading one with ``weights_only=False`` runs whatever code it names. Every checkpoint
normlight reads goes through :func:`read_checkpoint`, which uses ``torch.load(weights_only=True)``: tensors, plain
containers and numbers only, plus the types in :data:`ALLOWED_GLOBALS` (what normlight's own components store
beyond those; nothing today). A missing, truncated, foreign or unsafe file is a :class:`CheckpointError` that
names the file and what to do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from normlight.errors import NormlightError

# Types a normlight checkpoint may hold beyond torch's weights-only set (tensors, dicts, lists, tuples, numbers,
# strings, OrderedDict). Lightning's own state (loops, ModelCheckpoint, optimizer and LambdaLR state) needs none.
ALLOWED_GLOBALS: tuple = ()

# hyperparameters that are not settings of the task (LightningCLI bookkeeping)
_INTERNAL = ("_instantiator", "_class_path")


class CheckpointError(NormlightError):
    """A checkpoint that cannot be used: missing, unreadable, unsafe, or contradicting the requested run."""


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path`` loaded with ``weights_only=True`` (on CPU); raises :class:`CheckpointError`."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"--ckpt_path {path}: no such file; give an existing .ckpt file, or 'last' to continue this config's "
            "last checkpoint"
        )
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not a checkpoint we may use
        text = str(exc)
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if unsafe:
            why = (
                f"it holds objects other than tensors and plain values ({unsafe[1]}), which normlight never "
                "unpickles; only use checkpoints written by normlight / Lightning"
            )
        else:
            detail = re.search(r"WeightsUnpickler error: \s*(.+)", text)
            reason = (detail[1] if detail else text.splitlines()[0] if text else type(exc).__name__).split(". ")[0]
            why = f"it is truncated or not a PyTorch checkpoint ({reason})"
        raise CheckpointError(f"--ckpt_path {path}: cannot be read safely: {why}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"--ckpt_path {path}: not a Lightning checkpoint (it has no 'state_dict')")
    return ckpt


def run_id_of(ckpt: Mapping) -> str | None:
    """The MLflow run id a normlight checkpoint records (None for other checkpoints)."""
    return (ckpt.get("normlight") or {}).get("mlflow_run_id")


def task_settings(ckpt: Mapping) -> tuple[str | None, dict]:
    """(task class path, settings) stored in a checkpoint's hyperparameters."""
    hp = dict(ckpt.get("hyper_parameters") or {})
    return hp.get("_class_path"), {k: v for k, v in hp.items() if k not in _INTERNAL}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def conflicts(ckpt: Mapping, class_path: str | None, settings: Mapping) -> list[str]:
    """``model.<key>=<checkpoint value> vs <requested value>`` for every requested setting the checkpoint
    contradicts (and the task class, if it differs); empty when the checkpoint was trained with these settings."""
    ckpt_class, stored = task_settings(ckpt)
    out = []
    if ckpt_class and class_path and ckpt_class.rsplit(".", 1)[-1] != class_path.rsplit(".", 1)[-1]:
        out.append(f"model={ckpt_class} vs {class_path}")
    for key, value in settings.items():
        if key in stored and not _same(stored[key], value):
            out.append(f"model.{key}={stored[key]!r} vs {value!r}")
    return out


def refuse_conflicts(path: str, ckpt: Mapping, class_path: str | None, settings: Mapping) -> None:
    """Raise :class:`CheckpointError` naming both values when ``settings`` contradict the checkpoint."""
    found = conflicts(ckpt, class_path, settings)
    if found:
        raise CheckpointError(
            f"--ckpt_path {path} was trained with different settings (checkpoint vs this run): {'; '.join(found)}. "
            "Drop these options to continue the checkpoint as it was trained, or start a new run without --ckpt_path"
        )


__all__ = [
    "ALLOWED_GLOBALS",
    "CheckpointError",
    "conflicts",
    "read_checkpoint",
    "refuse_conflicts",
    "run_id_of",
    "task_settings",
]
