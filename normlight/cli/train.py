"""``normlight fit|validate|test|predict``: LightningCLI wired to normlight's tasks, data, MLflow and diagnostics.

``main(["fit", "--config", "configs/gpt/nano.yaml", "--model.norm", "rmsnorm"])`` runs in-process. Before any
training step it (1) checks the data files and that data and model agree on shapes, (2) gives the default
checkpoint callback a directory ``<default_root_dir>/checkpoints/<experiment>/<run name>-<config hash>/<start>``
(its own per fit, so identical fits started together never share one) with ``last.ckpt`` (also written on
Ctrl-C / SIGTERM), so ``--ckpt_path last`` finds the newest one of the same config and continues there,
(3) when resuming from a normlight checkpoint, continues the MLflow run recorded in it, and (4) makes the last
training step a validation step and prints a one-line result when the fit ends.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import warnings
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

import normlight.data  # noqa: F401  (imported so short class_path names resolve)
import normlight.tasks  # noqa: F401
from normlight.cli import console
from normlight.diagnostics import StabilityDiagnostics
from normlight.errors import NormlightError
from normlight.tasks.base import NormTask
from normlight.tracking import mlflow_utils, presentation
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
    # each fit writes into its own <start time>-<random> folder below the config's folder: search them all
    found = [p for p in dirpath.rglob("last*.ckpt") if re.match(r"^last(-v\d+)?$", p.stem)] if dirpath.is_dir() else []
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


class ValidateAtEnd(Callback):
    """Make the last training step a validation step, so a run shorter than ``val_check_interval`` still ends
    with ``val/*`` metrics and a summary (Lightning validates at a step where ``should_stop`` is set)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Request the stop (and with it the validation) at the final step of the run."""
        last = 0 < trainer.max_steps <= trainer.global_step
        if not last and (trainer.max_epochs or 0) > 0:
            done = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
            last = done and trainer.current_epoch + 1 >= trainer.max_epochs
        if last:
            trainer.should_stop = True


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
            config_dir = (
                Path(trainer.default_root_dir)
                / "checkpoints"
                / re.sub(r"[^A-Za-z0-9._-]+", "_", exp)
                / f"{slug}-{digest}"
            )
            # one folder per fit (two identical fits at once must not overwrite each other's last.ckpt);
            # ModelCheckpoint broadcasts rank 0's choice to the other ranks
            cb.dirpath = str(config_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}")
            if cb.save_last is None:
                cb.save_last = True
            if sub == "fit" and not any(isinstance(c, SaveOnInterrupt) for c in trainer.callbacks):
                trainer.callbacks.append(SaveOnInterrupt(cb.dirpath))
        if sub == "fit" and not any(isinstance(c, ValidateAtEnd) for c in trainer.callbacks):
            trainer.callbacks.append(ValidateAtEnd())
        # 3. resume: "last" -> the newest last.ckpt of this config; continue the MLflow run stored in it
        init = self.config_init[sub]
        ckpt = init.get("ckpt_path")
        if ckpt == "last" and isinstance(cb, ModelCheckpoint) and cb.dirpath:
            ckpt = _last_checkpoint(Path(cb.dirpath).parent)
            if ckpt is None:
                warnings.warn(f"--ckpt_path last: no last.ckpt in {Path(cb.dirpath).parent} yet; starting from scratch")
            else:  # continue in the folder of the checkpoint resumed from
                cb.dirpath = str(Path(ckpt).parent)
                for c in trainer.callbacks:
                    if isinstance(c, SaveOnInterrupt):
                        c.dirpath = cb.dirpath
            init["ckpt_path"] = ckpt
        if ckpt and ckpt not in ("best", "last", "hpc") and logger is not None:
            if mlflow_utils.continue_run(logger, _read_run_id(ckpt)):
                print(f"normlight: {sub} from {ckpt}, logging into its MLflow run {logger._run_id}")
        elif logger is not None and logger._run_name is None:
            logger._run_name = run_name

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Trainer:
        # the compact summary replaces Lightning's default one (same switch: enable_model_summary)
        if not VERBOSE and config.get("enable_model_summary") is not False:
            callbacks = [*callbacks, console.CompactModelSummary()]
        try:
            return super()._instantiate_trainer(config, callbacks)
        except (MisconfigurationException, ValueError) as exc:  # accelerator / strategy / devices the machine lacks
            hint = ""
            if "gpu" in str(exc).lower() and not torch.cuda.is_available():
                hint = " This machine has no GPU: use accelerator cpu (configs/strategy/fsdp2.yaml shards on CPU)."
            raise NormlightError(f"the trainer section of this config cannot run here: {exc}{hint}") from None

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
        """One line with the result (validation, best and final, diverged or not) and where it is recorded."""
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        diag = next((c for c in trainer.callbacks if isinstance(c, StabilityDiagnostics)), None)
        logger = mlflow_utils.mlflow_logger(trainer)
        recorded = logger is not None and logger._initialized
        result = {
            "run_name": (logger._run_name if logger is not None else None) or type(self.model).__name__,
            "step": trainer.global_step,
            "final": diag.summary.final if diag else {},
            "best": diag.summary.best if diag else {},
            "diverged_step": diag.guard.step if diag and diag.guard.diverged else None,
        }
        if recorded:  # the run's description and the experiment's UI view carry the same result
            presentation.describe_run(logger.experiment, logger.run_id, presentation.result_text(**result))
            presentation.update_view(logger.experiment, logger.experiment_id)
        run_id, exp_id = (logger.run_id, logger.experiment_id) if recorded else (None, None)
        print(presentation.result_line(**result, run_id=run_id, experiment_id=exp_id, view=recorded), flush=True)
        if recorded:
            print(
                f"normlight: recorded in {logger._tracking_uri} (experiment {logger._experiment_name!r}); "
                f"checkpoints in {getattr(trainer.checkpoint_callback, 'dirpath', None)}",
                flush=True,
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


VERBOSE = False  # `--verbose`: keep Lightning's and MLflow's full console output


def _run(argv: list[str]) -> None:
    global VERBOSE
    argv, VERBOSE = console.take_verbose(list(argv))
    if not VERBOSE:
        console.quiet()
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
