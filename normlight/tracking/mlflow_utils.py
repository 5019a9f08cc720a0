"""MLflow store defaults, the logger, and rank-0 helpers every other part of normlight logs through.

MLflow 3.x refuses the old file store, so the default store is ``sqlite:///<cwd>/mlflow.db`` with artifacts in
``<cwd>/mlartifacts``, recorded relative to the store (``mlflow-artifacts:/``, see ``tracking/artifacts.py``).
``MLFLOW_TRACKING_URI`` overrides the default, and so does an explicit ``tracking_uri``.
All helpers take the Trainer and do nothing off rank 0 or when the trainer has no MLflow logger.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment  # noqa: F401  (re-exported for plugins)
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from normlight.tracking import artifacts

artifacts.install()  # every normlight process that talks to MLflow imports this module

_SKIP_PARAMS = ("_instantiator", "_class_path")


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """``mlflow-artifacts:/`` (relative to the store: ``mlartifacts/`` beside the sqlite file, see
    :mod:`normlight.tracking.artifacts`) for a sqlite store; None (the server decides) otherwise."""
    return artifacts.ROOT_URI if artifacts.sqlite_path(tracking_uri) else None


class MLFlowLogger(_LightningMLFlowLogger):
    """Lightning's MLflow logger with normlight's store defaults, resume-safe params and a default experiment.

    Args:
        experiment_name: MLflow experiment (created on first use).
        run_name: run name; None = the task's readable name (``gpt-tiny/pre/rmsnorm/lr3e-4/s0``).
        tracking_uri: store URI; None = ``MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``.
        artifact_location: artifact root of a newly created experiment; None = ``mlartifacts`` beside a sqlite file.
        tags: extra run tags.
        run_id: continue this existing run (set automatically when resuming from a normlight checkpoint).
        log_model: log checkpoints as artifacts (Lightning's semantics); off by default (they stay on disk).
    """

    def __init__(
        self,
        experiment_name: str = "normlight",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        artifact_location: str | None = None,
        tags: dict[str, Any] | None = None,
        run_id: str | None = None,
        log_model: bool = False,
        prefix: str = "",
        synchronous: bool | None = None,
    ):
        tracking_uri = tracking_uri or default_tracking_uri()
        if artifact_location is None:
            artifact_location = default_artifact_location(tracking_uri)
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=tracking_uri,
            tags=tags,
            log_model=log_model,
            prefix=prefix,
            artifact_location=artifact_location,
            run_id=run_id,
            synchronous=synchronous,
        )
        self.config_logged = False  # set by MLflowConfigCallback: the config already gave the params

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """Flat params, minus LightningCLI internals and minus keys the run already has (so a resume never
        trips MLflow's "changing param values is not allowed"). Skipped when the CLI config was logged."""
        if self.config_logged:
            return
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

        flat = _flatten_dict(_convert_params(params))
        flat = {k: v for k, v in flat.items() if not any(k.endswith(s) for s in _SKIP_PARAMS)}
        self.log_params_once(flat)

    @rank_zero_only
    def log_params_once(self, params: Mapping[str, Any]) -> None:
        """Log flat params whose keys this run does not have yet (values truncated to MLflow's limit)."""
        existing = self.experiment.get_run(self.run_id).data.params
        todo = {k: str(v)[:6000] for k, v in params.items() if k not in existing}
        if todo:
            super().log_hyperparams(todo)


def mlflow_logger(trainer: Any) -> _LightningMLFlowLogger | None:
    """The trainer's first MLflow logger, or None."""
    for lg in getattr(trainer, "loggers", None) or []:
        if isinstance(lg, _LightningMLFlowLogger):
            return lg
    return None


def _rank0_logger(trainer: Any) -> _LightningMLFlowLogger | None:
    if trainer is None or not getattr(trainer, "is_global_zero", True):
        return None
    return mlflow_logger(trainer)


def get_run_id(trainer: Any) -> str | None:
    """The MLflow run id of this trainer's run (None off rank 0 or without an MLflow logger)."""
    lg = _rank0_logger(trainer)
    return lg.run_id if lg is not None else None


def set_tags(trainer: Any, tags: Mapping[str, Any]) -> None:
    """Set run tags (values stringified)."""
    lg = _rank0_logger(trainer)
    if lg is not None:
        for k, v in tags.items():
            lg.experiment.set_tag(lg.run_id, k, str(v))


def log_metrics(trainer: Any, metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log scalar metrics at ``step`` (default: the trainer's global step)."""
    lg = _rank0_logger(trainer)
    if lg is not None:
        lg.log_metrics({k: float(v) for k, v in metrics.items()}, step=trainer.global_step if step is None else step)


def log_artifact(trainer: Any, path: str | os.PathLike, artifact_path: str | None = None) -> None:
    """Upload a local file (or directory) to the run's artifacts."""
    lg = _rank0_logger(trainer)
    if lg is not None:
        if Path(path).is_dir():
            lg.experiment.log_artifacts(lg.run_id, str(path), artifact_path)
        else:
            lg.experiment.log_artifact(lg.run_id, str(path), artifact_path)


def log_text(trainer: Any, text: str, artifact_file: str) -> None:
    """Store ``text`` as the artifact ``artifact_file`` (e.g. ``samples/step_0000100.txt``)."""
    lg = _rank0_logger(trainer)
    if lg is not None:
        lg.experiment.log_text(lg.run_id, text, artifact_file)


def set_default_run_name(trainer: Any, name: str) -> None:
    """Name the run ``name`` unless the user chose a run name."""
    lg = _rank0_logger(trainer)
    if lg is not None and lg._run_name is None:
        lg.experiment.update_run(lg.run_id, name=name)
        lg._run_name = name


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the normlight source tree, with ``-dirty`` if it has local changes; None outside a git checkout."""
    src = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha or None


def continue_run(logger: Any, run_id: str | None) -> bool:
    """Point an MLflow logger that has not started yet at an existing run; False (and nothing changed) if the
    logger already started, has its own ``run_id``, or the run is not in its store."""
    if run_id is None or not isinstance(logger, _LightningMLFlowLogger) or logger._initialized or logger._run_id:
        return False
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(logger._tracking_uri).get_run(run_id)
    except MlflowException:
        return False
    logger._run_id = run_id
    return True


def mark_killed(trainer: Any) -> None:
    """End the run with status KILLED (an interruption, not a crash); its data stays and it can be resumed."""
    lg = _rank0_logger(trainer)
    if lg is not None and lg._initialized:
        try:
            lg.experiment.set_terminated(lg.run_id, "KILLED")
        except Exception as exc:  # noqa: BLE001 - best effort while shutting down; never mask the interruption
            print(f"normlight: could not mark MLflow run {lg.run_id} as killed: {exc}")
