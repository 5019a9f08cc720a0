"""``normlight fit|validate|test|predict``: LightningCLI wired to normlight's tasks, data, MLflow and diagnostics.

``main(["fit", "--config", "configs/gpt/nano.yaml", "--model.norm", "rmsnorm"])`` runs in-process. Before any
MLflow run exists it (1) checks the data (files, sizes, batch size) and that data and model agree on shapes, the
validation interval and a writable checkpoint folder, (2) gives the default checkpoint callback a stable directory
``<default_root_dir>/checkpoints/<experiment>/<run name>-<config hash>`` and every checkpoint callback (a
user's own ``dirpath`` too, unless it sets ``save_last``) a ``last.ckpt`` (also written on Ctrl-C / SIGTERM), so
``--ckpt_path last`` finds it, and (3) when resuming, reads the checkpoint safely
(``weights_only=True``), refuses settings that contradict it, and continues the MLflow run recorded in it.

Ctrl-C and SIGTERM stop training at the next step boundary (never inside a store write): ``last.ckpt`` is written,
the diagnostics summary logged, the run ends KILLED and the command exits 130 (SIGINT) or 143 (SIGTERM).

Each fit gets its own checkpoint folder ``<run name>-<config hash>/<start>`` (identical fits started together
never share one; ``--ckpt_path last`` finds the newest ``last.ckpt`` of the same config and continues in its
folder), the last training step is a validation step, and a one-line result is printed when the fit ends.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import secrets
import signal
import threading
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
from normlight.data.common import BaseDataModule
from normlight.diagnostics import StabilityDiagnostics
from normlight.errors import NormlightError
from normlight.tasks import checkpoint as ckpt_io
from normlight.tasks.base import NormTask
from normlight.tracking import mlflow_utils, presentation
from normlight.tracking.config_callback import MLflowConfigCallback
from normlight.tracking.credentials import redact

TRAINER_DEFAULTS = {
    "default_root_dir": "runs",
    "log_every_n_steps": 10,
    "logger": {"class_path": "normlight.tracking.mlflow_utils.MLFlowLogger"},
}
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
SUBCOMMANDS = ("fit", "validate", "test", "predict")

# what the last main() call was stopped by (a signal name, or a checkpoint write error); read by main()
_STOPPED: dict[str, str] = {}


class ConfigError(NormlightError):
    """A training setting that cannot work (found before any run is created)."""


def _last_checkpoint(dirpath: Path) -> str | None:
    # each fit writes into its own <start time>-<random> folder below the config's folder: search them all
    found = [p for p in dirpath.rglob("last*.ckpt") if re.match(r"^last(-v\d+)?$", p.stem)] if dirpath.is_dir() else []
    return str(max(found, key=lambda p: p.stat().st_mtime)) if found else None


def _check_writable(folder: str) -> None:
    """Create ``folder`` and write a probe file into it, or raise ConfigError naming it."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".normlight-write-test-{threading.get_native_id()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"checkpoint folder {folder} is not writable ({exc.strerror or exc}); make it writable or set "
            "--trainer.default_root_dir to a writable folder"
        ) from None


def _in_folder(exc: BaseException, folder: str | None) -> bool:
    name = getattr(exc, "filename", None)
    if not folder or not name:
        return False
    try:
        return Path(name).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, ValueError):
        return False


class SaveOnInterrupt(Callback):
    """Ctrl-C and SIGTERM stop at the next step boundary; then ``last.ckpt`` is written (state of the last
    finished step, so ``--ckpt_path last`` resumes exactly there), the diagnostics summary is logged and the
    MLflow run ends KILLED. Saving needs a checkpoint folder and a single process (it is collective under DDP).

    Ctrl-C is turned into Lightning's SIGTERM path: a flag checked between steps, so the interruption never
    lands inside an MLflow store write (a KeyboardInterrupt there leaves the sqlite store locked and the
    process hanging at exit). A second Ctrl-C interrupts at once.
    """

    def __init__(self, dirpath: str | None):
        self.dirpath = dirpath
        self._previous = None

    def on_train_start(self, trainer, pl_module) -> None:
        """Route Ctrl-C through Lightning's safe stop (main thread of a single process only)."""
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        _STOPPED.setdefault("signal", "SIGINT")
        signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)  # a second Ctrl-C: at once
        self._previous = None
        lightning_stop = signal.getsignal(signal.SIGTERM)
        if not callable(lightning_stop):
            raise KeyboardInterrupt
        print("normlight: Ctrl-C: stopping after the current step (press again to stop at once)", flush=True)
        lightning_stop(signum, frame)

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def on_train_end(self, trainer, pl_module) -> None:
        """Give Ctrl-C back."""
        self._restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Interruption: save, log the summary, mark KILLED. Checkpoint write failure: mark KILLED (the run can
        continue from its last good checkpoint). Any other crash: nothing (the state may be broken)."""
        self._restore()
        if isinstance(exception, OSError) and _in_folder(exception, self.dirpath):
            _STOPPED["checkpoint_error"] = (
                f"cannot write checkpoint {exception.filename} ({exception.strerror or exception}); training "
                f"stopped at step {trainer.global_step}, run marked KILLED. Make {self.dirpath} writable and "
                "continue with --ckpt_path last"
            )
            mlflow_utils.mark_killed(trainer)
            return
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        _STOPPED.setdefault("signal", "SIGINT" if isinstance(exception, KeyboardInterrupt) else "SIGTERM")
        if trainer.state.fn != TrainerFn.FITTING:
            return
        if self.dirpath and trainer.world_size == 1 and trainer.global_step > 0:
            path = Path(self.dirpath) / "last.ckpt"
            trainer.save_checkpoint(path, weights_only=False)
            print(
                f"normlight: interrupted at step {trainer.global_step}; saved {path} (continue with --ckpt_path last)",
                flush=True,
            )
        for cb in trainer.callbacks:
            if isinstance(cb, StabilityDiagnostics):
                mlflow_utils.log_metrics(trainer, cb.summary_metrics(pl_module))
        mlflow_utils.mark_killed(trainer)


def _explicit_settings(model_cfg) -> tuple[str | None, dict]:
    """(class path, the model settings the user chose): every init arg whose value differs from the task's default."""
    cfg = model_cfg.as_dict() if hasattr(model_cfg, "as_dict") else dict(model_cfg or {})
    class_path, init = cfg.get("class_path"), dict(cfg.get("init_args") or {})
    defaults: dict = {}
    try:
        module, _, name = (class_path or "").rpartition(".")
        cls = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):  # an unknown class: every setting counts as chosen
        cls = None
    for klass in getattr(cls, "__mro__", ()):
        init_fn = klass.__dict__.get("__init__")
        if init_fn is None:
            continue
        for name, prm in inspect.signature(init_fn).parameters.items():
            if prm.default is not inspect.Parameter.empty:
                defaults.setdefault(name, prm.default)
    return class_path, {k: v for k, v in init.items() if k not in defaults or not ckpt_io._same(v, defaults[k])}


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

    def _parse_ckpt_path(self) -> None:
        """Before Lightning fills unset model settings from ``--ckpt_path FILE``: read the file safely (one clear
        error for a missing, truncated or unsafe file) and refuse settings the user chose that contradict it."""
        sub = self.config.get("subcommand")
        if not sub:
            return
        self._explicit = _explicit_settings(self.config[sub].get("model"))
        path = self.config[sub].get("ckpt_path")
        if path and path not in ("best", "last", "hpc"):
            ckpt = ckpt_io.read_checkpoint(path)
            ckpt_io.refuse_conflicts(path, ckpt, *self._explicit)
        super()._parse_ckpt_path()

    def _check_data(self, sub: str) -> None:
        """Everything about the data that can fail, before any run exists: files, sizes, batch size, shapes,
        and a validation interval that fits in an epoch."""
        model, dm, trainer = self.model, self.datamodule, self.trainer
        if dm is None:
            return
        if hasattr(dm, "check"):
            dm.check()
        if isinstance(dm, BaseDataModule):
            dm.setup({"fit": "fit", "validate": "validate"}.get(sub, sub))
        if isinstance(model, NormTask):
            model.check_data(dm)
        vci = trainer.val_check_interval
        if sub == "fit" and isinstance(dm, BaseDataModule) and isinstance(vci, int) and trainer.check_val_every_n_epoch:
            n = dm.train_batches_per_epoch(trainer.world_size)
            limit = trainer.limit_train_batches
            n = min(n, limit) if isinstance(limit, int) else int(n * limit)
            if vci > n:
                raise ConfigError(
                    f"trainer.val_check_interval={vci} is larger than the {n} training batches of one epoch; use a "
                    f"value <= {n}, or set --trainer.check_val_every_n_epoch null to count batches across epochs"
                )

    def _prepare(self) -> None:
        sub = self.subcommand
        model, trainer = self.model, self.trainer
        # 1. bad data, a data/model mismatch or a bad interval fails here, before a run or a step exists
        self._check_data(sub)
        logger = mlflow_utils.mlflow_logger(trainer)
        run_name = (logger._run_name if logger is not None else None) or (
            model.run_name() if isinstance(model, NormTask) else type(model).__name__
        )
        # 2. stable checkpoint directory: same config -> same directory, so `--ckpt_path last` finds it
        cb = trainer.checkpoint_callback
        search = Path(cb.dirpath) if isinstance(cb, ModelCheckpoint) and cb.dirpath else None  # a user's own folder
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
            search = config_dir  # every fit of this config, in its own folder below it
        if isinstance(cb, ModelCheckpoint) and cb.save_last is None:  # a user's folder too: `last` must find it
            cb.save_last = True
        folder = cb.dirpath if isinstance(cb, ModelCheckpoint) else None
        if sub == "fit" and folder and trainer.is_global_zero:
            _check_writable(folder)
        if sub == "fit" and not any(isinstance(c, SaveOnInterrupt) for c in trainer.callbacks):
            trainer.callbacks.append(SaveOnInterrupt(folder))
        if sub == "fit" and not any(isinstance(c, ValidateAtEnd) for c in trainer.callbacks):
            trainer.callbacks.append(ValidateAtEnd())
        # 3. resume: "last" -> the newest last.ckpt of this config; read it safely, refuse contradicting settings,
        #    and continue the MLflow run stored in it
        init = self.config_init[sub]
        ckpt, from_last = init.get("ckpt_path"), False
        if ckpt == "last" and isinstance(cb, ModelCheckpoint) and cb.dirpath:
            ckpt, from_last = _last_checkpoint(search), True
            if ckpt is None:
                warnings.warn(f"--ckpt_path last: no last.ckpt in {search} yet; starting from scratch")
            else:  # continue in the folder of the checkpoint resumed from
                cb.dirpath = str(Path(ckpt).parent)
                for c in trainer.callbacks:
                    if isinstance(c, SaveOnInterrupt):
                        c.dirpath = cb.dirpath
            init["ckpt_path"] = ckpt
        if ckpt and ckpt not in ("best", "last", "hpc"):
            state = ckpt_io.read_checkpoint(ckpt)
            if from_last:  # an explicit file was checked while parsing, before its settings were merged
                class_path, chosen = getattr(self, "_explicit", (None, {}))
                ckpt_io.refuse_conflicts(ckpt, state, class_path, chosen)
                if isinstance(model, NormTask):  # unset settings cannot adopt the checkpoint's values here
                    ckpt_io.refuse_conflicts(ckpt, state, class_path, dict(model.hparams))
            init["weights_only"] = True  # Lightning's own load: tensors and plain values only
            if logger is not None and mlflow_utils.continue_run(logger, ckpt_io.run_id_of(state)):
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
                f"normlight: recorded in {redact(logger._tracking_uri)} (experiment {logger._experiment_name!r}); "
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


def _one_line(message: str) -> str:
    """jsonargparse's multi-line parse error as one line (the usage block is never printed)."""
    noise = (
        "Does not validate against any of the Union subtypes",
        "Given value",
        "Subtypes:",
        "Errors:",
        "Expected a <class 'NoneType'>",
        "<class 'NoneType'>",
    )
    lines = [ln.strip().lstrip("- ") for ln in str(message).splitlines()]
    return " ".join(ln for ln in lines if ln and not ln.startswith(noise))


def main(argv: list[str]) -> int:
    """Run LightningCLI on ``argv`` (``argv[0]`` is fit|validate|test|predict). Returns the exit code.

    A normlight error (unknown name, bad plugin option, data/model mismatch, missing data, bad checkpoint)
    propagates as itself, unwrapped from jsonargparse's "Does not validate against any of the Union subtypes",
    so the ``normlight`` command prints one ``error: ...`` line; so does a config that does not parse (without
    the usage block). An interrupted fit returns 130 (Ctrl-C) or 143 (SIGTERM).
    """
    from jsonargparse import ArgumentError

    _STOPPED.clear()
    try:
        _run(argv)
    except NormlightError:
        raise
    except ArgumentError as exc:
        sub = argv[0] if argv and argv[0] in SUBCOMMANDS else "fit"
        raise ConfigError(f"{_one_line(exc)} (see `normlight {sub} --help`)") from None
    except (SystemExit, KeyboardInterrupt) as exc:
        if "signal" in _STOPPED or isinstance(exc, KeyboardInterrupt):
            return EXIT_CODES[_STOPPED.get("signal", "SIGINT")]
        raise
    except Exception as exc:
        if "checkpoint_error" in _STOPPED:
            raise ckpt_io.CheckpointError(_STOPPED["checkpoint_error"]) from None
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
        no_exit = {"exit_on_error": False}  # parse errors raise, main() prints them as one line
        NormlightCLI(
            NormTask,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=MLflowConfigCallback,
            save_config_kwargs={"save_to_log_dir": False, "overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            parser_kwargs={**no_exit, **{s: dict(no_exit) for s in SUBCOMMANDS}},
            args=list(argv),
        )


__all__ = ["NormlightCLI", "main"]
