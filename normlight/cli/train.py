"""``normlight fit|validate|test|predict``: LightningCLI wired to normlight's tasks, data, MLflow and diagnostics.

``main(["fit", "--config", "configs/gpt/nano.yaml", "--model.norm", "rmsnorm"])`` runs in-process. Before any
training step it (1) checks the data files and that data and model agree on shapes, (2) gives the default
checkpoint callback a stable directory ``<default_root_dir>/checkpoints/<experiment>/<run name>-<config hash>``
with ``last.ckpt`` (also written on Ctrl-C / SIGTERM), so ``--ckpt_path last`` finds it, and (3) when resuming from a normlight checkpoint,
continues the MLflow run recorded in it.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

import normlight.data  # noqa: F401  (imported so short class_path names resolve)
import normlight.tasks  # noqa: F401
from normlight.diagnostics import StabilityDiagnostics
from normlight.errors import NormlightError
from normlight.tasks.base import NormTask
from normlight.tracking import mlflow_utils
from normlight.tracking.config_callback import MLflowConfigCallback

TRAINER_DEFAULTS = {
    "default_root_dir": "runs",
    "log_every_n_steps": 10,
    "logger": {"class_path": "normlight.tracking.mlflow_utils.MLFlowLogger"},
}


def _read_run_id(ckpt_path: str) -> str | None:
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # noqa: BLE001 - a checkpoint we cannot read is Lightning's to report
        return None
    return (ckpt.get("normlight") or {}).get("mlflow_run_id")


def _last_checkpoint(dirpath: Path) -> str | None:
    found = [p for p in dirpath.glob("last*.ckpt") if re.match(r"^last(-v\d+)?$", p.stem)] if dirpath.is_dir() else []
    return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None


class SaveOnInterrupt(Callback):
    """On Ctrl-C or SIGTERM, write ``last.ckpt`` with the state of the last finished step, so that
    ``--ckpt_path last`` resumes exactly there (single-process runs: saving is collective under DDP)."""

    def __init__(self, dirpath: str):
        self.dirpath = dirpath

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Save only for interruptions, never for crashes (the state may be broken then)."""
        if (
            isinstance(exception, (KeyboardInterrupt, SIGTERMException))
            and trainer.world_size == 1
            and trainer.state.fn == TrainerFn.FITTING
            and trainer.global_step > 0
        ):
            path = Path(self.dirpath) / "last.ckpt"
            trainer.save_checkpoint(path)
            print(
                f"normlight: interrupted at step {trainer.global_step}; saved {path} (continue with --ckpt_path last)",
                flush=True,
            )
            mlflow_utils.mark_killed(trainer)


class NormlightCLI(LightningCLI):
    """LightningCLI with the diagnostics bundle as a config group and normlight's pre-run checks."""

    def add_arguments_to_parser(self, parser) -> None:
        """``--diagnostics.*`` configures :class:`normlight.diagnostics.StabilityDiagnostics`."""
        parser.add_lightning_class_args(StabilityDiagnostics, "diagnostics")

    def _section(self, key: str) -> dict:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        value = cfg.get(key)
        return value.as_dict() if hasattr(value, "as_dict") else (value or {})

    def _prepare(self) -> None:
        sub = self.subcommand
        model, dm, trainer = self.model, self.datamodule, self.trainer
        # 1. bad data or a data/model shape mismatch fails here, before a run or a step exists
        if dm is not None:
            if hasattr(dm, "check"):
                dm.check()
            if isinstance(model, NormTask):
                model.check_data(dm)
        logger = mlflow_utils.mlflow_logger(trainer)
        run_name = (logger._run_name if logger is not None else None) or (
            model.run_name() if isinstance(model, NormTask) else type(model).__name__
        )
        # 2. stable checkpoint directory: same config -> same directory, so `--ckpt_path last` finds it
        cb = trainer.checkpoint_callback
        if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
            key = json.dumps(
                {
                    "model": self._section("model"),
                    "data": self._section("data"),
                    "seed": self.config[sub].get("seed_everything") if sub else None,
                },
                sort_keys=True,
                default=str,
            )
            digest = hashlib.sha1(key.encode()).hexdigest()[:8]
            exp = getattr(logger, "_experiment_name", None) or "default"
            slug = re.sub(r"[^A-Za-z0-9._-]+", "_", run_name)
            cb.dirpath = str(
                Path(trainer.default_root_dir)
                / "checkpoints"
                / re.sub(r"[^A-Za-z0-9._-]+", "_", exp)
                / f"{slug}-{digest}"
            )
            if cb.save_last is None:
                cb.save_last = True
            if sub == "fit" and not any(isinstance(c, SaveOnInterrupt) for c in trainer.callbacks):
                trainer.callbacks.append(SaveOnInterrupt(cb.dirpath))
        # 3. resume: "last" -> the newest last.ckpt of this config; continue the MLflow run stored in it
        init = self.config_init[sub]
        ckpt = init.get("ckpt_path")
        if ckpt == "last" and isinstance(cb, ModelCheckpoint) and cb.dirpath:
            ckpt = _last_checkpoint(Path(cb.dirpath))
            if ckpt is None:
                warnings.warn(f"--ckpt_path last: no last.ckpt in {cb.dirpath} yet; starting from scratch")
            init["ckpt_path"] = ckpt
        if ckpt and ckpt not in ("best", "last", "hpc") and logger is not None:
            if mlflow_utils.continue_run(logger, _read_run_id(ckpt)):
                print(f"normlight: {sub} from {ckpt}, logging into its MLflow run {logger._run_id}")
        elif logger is not None and logger._run_name is None:
            logger._run_name = run_name

    def before_fit(self) -> None:
        """Checks and run set-up before ``trainer.fit``."""
        self._prepare()

    def before_validate(self) -> None:
        """Checks and run set-up before ``trainer.validate``."""
        self._prepare()

    def before_test(self) -> None:
        """Checks and run set-up before ``trainer.test``."""
        self._prepare()

    def after_fit(self) -> None:
        """Say where the run is recorded."""
        logger = mlflow_utils.mlflow_logger(self.trainer)
        if logger is not None and self.trainer.is_global_zero and logger._initialized:
            print(
                f"normlight: MLflow run {logger.run_id} ({logger._run_name}) in {logger._tracking_uri}; "
                f"checkpoints in {getattr(self.trainer.checkpoint_callback, 'dirpath', None)}; "
                "browse with `normlight ui`"
            )


def _normlight_cause(exc: BaseException) -> NormlightError | None:
    """The outermost NormlightError in an exception's cause chain (jsonargparse wraps instantiation errors)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, NormlightError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str]) -> int:
    """Run LightningCLI on ``argv`` (``argv[0]`` is fit|validate|test|predict). Returns the exit code.

    A normlight error (unknown name, bad plugin option, data/model mismatch, missing data) propagates as
    itself, unwrapped from jsonargparse's "Does not validate against any of the Union subtypes", so the
    ``normlight`` command prints one ``error: ...`` line.
    """
    try:
        _run(argv)
    except NormlightError:
        raise
    except Exception as exc:
        cause = _normlight_cause(exc)
        if cause is None:
            raise
        raise cause from None
    return 0


def _run(argv: list[str]) -> None:
    with warnings.catch_warnings():
        # args= is how we pass argv; sys.argv must stay intact because DDP re-executes it for the other ranks
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
        NormlightCLI(
            NormTask,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=MLflowConfigCallback,
            save_config_kwargs={"save_to_log_dir": False, "overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            args=list(argv),
        )


__all__ = ["NormlightCLI", "main"]
