"""Where the analyzed model and its evaluation data come from.

- a normlight checkpoint: read with ``torch.load(weights_only=True)`` only (tensors and plain containers; nothing
  is unpickled), the task rebuilt from the checkpoint's hyperparameters (``_class_path`` must name a
  :class:`~normlight.tasks.base.NormTask`), its weights loaded strictly; the checkpoint also names the MLflow
  run it was trained in;
- a training config (the YAML ``normlight fit`` takes): the task built from its ``model:`` section, randomly
  initialized unless a checkpoint is given too, and the data from its ``data:`` section;
- any ``nn.Module`` with a family: through the Python API (:func:`normlight.analysis.analyze`), the hook for
  models imported from elsewhere (pretrained weights: see docs/analysis.md).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from normlight.analysis.layers import AnalysisInputError
from normlight.errors import NormlightError
from normlight.models.pretrained import load_pretrained
from normlight.tasks.base import NormTask


@dataclass
class Source:
    """A model to analyze and where it came from."""

    model: torch.nn.Module
    task: NormTask | None = None
    run_id: str | None = None
    step: int | None = None
    ckpt_path: str | None = None
    init_args: dict = field(default_factory=dict)
    class_path: str | None = None


def resolve_class(path: str, package: str, base: type, what: str) -> type:
    """A class from a dotted path or a short name exported by ``package``; it must subclass ``base``."""
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module or package), name)
    except (ImportError, AttributeError) as exc:
        raise AnalysisInputError(f"{what} class {path!r} cannot be imported: {exc}") from None
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise AnalysisInputError(f"{what} class {path!r} is not a {base.__name__}")
    return cls


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint's contents, read safely (``weights_only=True``); a clear error if it is missing or unsafe."""
    p = Path(path)
    if not p.is_file():
        raise AnalysisInputError(f"checkpoint {path} not found; give --ckpt_path a .ckpt file written by normlight fit")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch says, the file is not a safe checkpoint for us
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise AnalysisInputError(
            f"checkpoint {path} cannot be read with torch.load(weights_only=True) ({type(exc).__name__}: {first}); "
            "normlight reads only checkpoints made of tensors and plain containers, never arbitrary pickles"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise AnalysisInputError(
            f"checkpoint {path} is not a normlight training checkpoint (it has no state_dict / hyper_parameters)"
        )
    return ckpt


def build_task(class_path: str, init_args: dict) -> NormTask:
    """The task (and its model) from a class path and its init arguments."""
    cls = resolve_class(class_path, "normlight.tasks", NormTask, "task")
    try:
        return cls(**init_args)
    except TypeError as exc:  # e.g. a checkpoint from a version whose task took other arguments
        raise AnalysisInputError(f"task {cls.__name__} rejected the recorded arguments: {exc}") from None


def from_checkpoint(path: str | Path) -> Source:
    """The trained model of a normlight checkpoint (weights loaded strictly)."""
    ckpt = load_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    class_path = hp.pop("_class_path", None)
    hp.pop("_instantiator", None)
    if not class_path:
        raise AnalysisInputError(
            f"checkpoint {path} does not record its task class (_class_path); was it written by normlight fit?"
        )
    task = build_task(class_path, hp)
    try:
        task.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise AnalysisInputError(f"checkpoint {path} does not fit the model its hyperparameters build: {exc}") from None
    meta = ckpt.get("normlight") or {}
    return Source(
        model=task.model,
        task=task,
        run_id=meta.get("mlflow_run_id"),
        step=ckpt.get("global_step"),
        ckpt_path=str(path),
        init_args=hp,
        class_path=class_path,
    )


def read_config(path: str | Path) -> dict:
    """A training config YAML (``model:``, ``data:``, ``seed_everything:`` ...)."""
    p = Path(path)
    if not p.is_file():
        raise AnalysisInputError(f"config {path} not found")
    cfg = yaml.safe_load(p.read_text())
    if not isinstance(cfg, dict):
        raise AnalysisInputError(f"config {path} is not a mapping of sections (model:, data:, ...)")
    return cfg


def _section(cfg: dict, key: str, where: str) -> tuple[str, dict]:
    sec = cfg.get(key)
    if isinstance(sec, str):
        return sec, {}
    if not isinstance(sec, dict) or not isinstance(sec.get("class_path"), str):
        raise AnalysisInputError(f"{where}: the {key}: section needs a class_path (and init_args)")
    return sec["class_path"], dict(sec.get("init_args") or {})


def from_config(cfg: dict, where: str = "config") -> Source:
    """A freshly initialized model from a config's ``model:`` section (seeded by its ``seed_everything``)."""
    class_path, init_args = _section(cfg, "model", where)
    torch.manual_seed(int(cfg.get("seed_everything") or 0))
    task = build_task(class_path, init_args)
    return Source(model=task.model, task=task, init_args=init_args, class_path=class_path)


def from_pretrained(source: str) -> Source:
    """A pretrained model imported with :func:`normlight.models.load_pretrained` (``hf:...``, ``nanogpt:...``,
    ``timm:...``, ``torchvision:...``; docs/pretrained.md), evaluated on the data given with ``--data``."""
    try:
        model = load_pretrained(source)
    except NormlightError as exc:
        raise AnalysisInputError(f"--init_from {source}: {exc}") from None
    return Source(model=model)


def data_spec(value: Any, where: str) -> tuple[str, dict]:
    """``(class_path, init_args)`` from a ``data:`` section, a class name, a YAML mapping string or a YAML file."""
    if isinstance(value, str):
        p = Path(value)
        if value.endswith((".yaml", ".yml")) or p.is_file():
            cfg = read_config(p)
            return _section(cfg if "data" in cfg else {"data": cfg}, "data", str(p))
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise AnalysisInputError(
                f"{where}: cannot parse {value!r} as a class name or YAML mapping: {exc}"
            ) from None
    return _section({"data": value}, "data", where)


def build_data(class_path: str, init_args: dict, eval_batch_size: int | None = None):
    """The DataModule, checked (``check()``) and set up for validation."""
    from lightning.pytorch import LightningDataModule

    cls = resolve_class(class_path, "normlight.data", LightningDataModule, "data")
    args = dict(init_args)
    if eval_batch_size is not None:
        if "eval_batch_size" not in inspect.signature(cls).parameters:
            raise AnalysisInputError(f"--batch-size: data class {cls.__name__} has no eval_batch_size option")
        args["eval_batch_size"] = eval_batch_size
    try:
        dm = cls(**args)
    except TypeError as exc:
        raise AnalysisInputError(f"data class {cls.__name__} rejected its options {args}: {exc}") from None
    if hasattr(dm, "check"):
        dm.check()
    dm.setup("fit")
    return dm


def take_batches(loader, limit: int) -> list:
    """The first ``limit`` ``(inputs, targets)`` batches of a loader."""
    out = []
    for batch in loader:
        if len(out) >= limit:
            break
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise AnalysisInputError("layer analysis needs (inputs, targets) batches from the data module")
        out.append((batch[0], batch[1]))
    return out
