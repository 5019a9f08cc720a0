"""MLflow store defaults, the logger, and rank-0 helpers every other part of normlight logs through.

MLflow 3.x refuses the old file store, so the default store is ``sqlite:///<cwd>/mlflow.db`` with artifacts in
``<cwd>/mlartifacts``, recorded relative to the store (``mlflow-artifacts:/``, see ``tracking/artifacts.py``).
``MLFLOW_TRACKING_URI`` overrides the default, and so does an explicit ``tracking_uri``.
All helpers take the Trainer and do nothing off rank 0 or when the trainer has no MLflow logger.

normlight's logger never lets the store stall or corrupt training: a new sqlite store is created under a file lock
(``store.py``), metrics and in-training tags go through an ordered background writer that survives an outage
(``writer.py``), a resumed run never logs a metric point at a step it already has (``log_metrics``), and
credentials in the URI are moved to MLflow's environment variables or redacted (``credentials.py``).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment  # (also re-exported for plugins)
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from normlight.tracking import artifacts, credentials, store
from normlight.tracking.writer import StoreWriter

artifacts.install()  # every normlight process that talks to MLflow imports this module

_SKIP_PARAMS = ("_instantiator", "_class_path")
# how long the end of a run waits for an unreachable store before writing the unsent points to a file
FLUSH_TIMEOUT = 600.0


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


default_artifact_location = store.default_artifact_location


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
        tracking_uri = credentials.move_to_env(tracking_uri or default_tracking_uri())
        if credentials.has_secret(tracking_uri):  # MLflow would print it in its "View run at" line
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        if artifact_location is None:
            artifact_location = default_artifact_location(tracking_uri)
        store.prepare_store(tracking_uri)  # a new sqlite store: schema created once, under a file lock
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
        self.final_status: str | None = None  # overrides Lightning's finalize status (KILLED on interruption)
        self._writer: StoreWriter | None = None
        self._floors: dict[str, int] | None = None  # per metric key: the last step the run already has

    @property
    @rank_zero_experiment
    def experiment(self):
        """The MLflow client; the experiment is created race-free (several processes may start at once)."""
        if not self._initialized and self._run_id is None and self._experiment_id is None:
            self._experiment_id = store.ensure_experiment(
                self._mlflow_client, self._experiment_name, self._tracking_uri, self._artifact_location
            )
        return _LightningMLFlowLogger.experiment.fget(self)

    def writer(self) -> StoreWriter:
        """The run's background writer (started on first use)."""
        if self._writer is None:
            self._writer = StoreWriter(self.experiment, self.run_id, credentials.redact(self._tracking_uri))
        return self._writer

    def _metric_floors(self) -> dict[str, int]:
        """Per metric key, the highest step this run already recorded (empty for a new run)."""
        if self._floors is None:
            run = self.experiment.get_run(self.run_id)
            objs = getattr(run.data, "_metric_objs", None)
            if objs is None:  # no step information in this MLflow version: read each history
                objs = [m for k in run.data.metrics for m in self.experiment.get_metric_history(self.run_id, k)]
            self._floors = {}
            for m in objs:
                self._floors[m.key] = max(m.step, self._floors.get(m.key, m.step))
        return self._floors

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Queue metrics for the background writer; training never waits for the store.

        Resume rule: a point at a step the run already has for that key (it was logged before the interruption,
        from the same data since the loaders are resumable) is not logged again, so every key's history has
        one point per step."""
        from lightning.fabric.utilities.logger import _add_prefix
        from mlflow.entities import Metric

        step = int(step or 0)
        floors = self._metric_floors()
        now = int(time.time() * 1000)
        out = []
        for key, value in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(value, str):
                continue
            key = re.sub(r"[^a-zA-Z0-9_/. -]+", "", key)
            if step <= floors.get(key, -1):
                continue
            out.append(Metric(key=key, value=float(value), timestamp=now, step=step))
        self.writer().log_metrics(out)

    def submit(self, fn, description: str) -> None:
        """Run a store call (a tag, a text) through the writer, after the metrics queued before it."""
        self.writer().call(fn, description)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Flush the writer, then end the run (KILLED after an interruption, whatever Lightning passes)."""
        if not self._initialized:
            return
        if self._writer is not None:
            unsent = Path.cwd() / f"mlflow-unsent-{self.run_id}.jsonl"
            self._writer.flush(timeout=FLUSH_TIMEOUT, unsent_file=unsent)
            self._writer.close()
            self._writer = None
        try:
            super().finalize(self.final_status or status)
        except Exception as exc:  # noqa: BLE001 - the run's data is stored; only its end status could not be set
            print(
                f"normlight: error: could not set the end status of MLflow run {self.run_id}: "
                f"{credentials.redact(str(exc))[:300]}",
                flush=True,
            )

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


def _call(lg: _LightningMLFlowLogger, fn, description: str) -> None:
    """Through normlight's writer (ordered with the metrics, never blocking training), else directly."""
    if isinstance(lg, MLFlowLogger):
        lg.submit(fn, description)
    else:
        fn()


def set_tags(trainer: Any, tags: Mapping[str, Any]) -> None:
    """Set run tags (values stringified)."""
    lg = _rank0_logger(trainer)
    if lg is not None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        client, run_id = lg.experiment, lg.run_id
        _call(lg, lambda: client.log_batch(run_id, tags=batch), f"tags {sorted(tags)}")


def log_params(trainer: Any, params: Mapping[str, Any]) -> None:
    """Log flat params the run does not have yet (a resumed run keeps its first values)."""
    lg = _rank0_logger(trainer)
    if lg is None:
        return
    if isinstance(lg, MLFlowLogger):
        lg.log_params_once(params)
    else:
        existing = lg.experiment.get_run(lg.run_id).data.params
        lg.log_hyperparams({k: v for k, v in params.items() if k not in existing})


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
        client, run_id = lg.experiment, lg.run_id
        _call(lg, lambda: client.log_text(run_id, text, artifact_file), f"text {artifact_file}")


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
    """End the run with status KILLED (an interruption, not a crash); its data stays and it can be resumed.

    normlight's logger ends the run KILLED when Lightning finalizes it (Lightning passes "failed"); another
    MLflow logger's run is terminated here."""
    lg = _rank0_logger(trainer)
    if isinstance(lg, MLFlowLogger):
        lg.final_status = "KILLED"
    elif lg is not None and lg._initialized:
        try:
            lg.experiment.set_terminated(lg.run_id, "KILLED")
        except Exception as exc:  # noqa: BLE001 - best effort while shutting down; never mask the interruption
            print(f"normlight: could not mark MLflow run {lg.run_id} as killed: {credentials.redact(str(exc))}")
