"""The MLflow side of ``normlight analyze``: read a training run's config back, and log analysis results into the
SAME run as the checkpoint's training (or a linked ``analyze/...`` run), so the MLflow UI and ``normlight compare``
show training and analysis together.

Results are metrics ``analysis/<analysis>/<key>``: scalars at step 0, series with step = position on their axis
(layer index, number of layers removed, span length). The axis of each series is stored as the run tag
``step_axis/<metric>``, which ``normlight compare`` uses to label its x axis. The report files are uploaded under
the artifact folder ``analysis/``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from normlight.tracking.compare import STEP_AXIS_TAG
from normlight.tracking.sweep_runs import ensure_experiment

ANALYZE_TAG = "normlight.analyze"  # set on linked analyze/... runs
SOURCE_TAG = "normlight.analyze.source_run"


def find_run(client: MlflowClient, run_id: str | None):
    """The run ``run_id`` in this store, or None (no id, or the run is not here)."""
    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def training_config(client: MlflowClient, run_id: str) -> dict | None:
    """The resolved config (``config.yaml`` artifact) the run was trained with, or None if it has none."""
    names = {a.path for a in client.list_artifacts(run_id)}
    if "config.yaml" not in names:
        return None
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR as bar

    before = os.environ.get(bar.name)
    os.environ[bar.name] = "false"  # one small file: MLflow's progress bar would be noise on stderr
    try:
        with tempfile.TemporaryDirectory() as d:
            path = client.download_artifacts(run_id, "config.yaml", d)
            cfg = yaml.safe_load(Path(path).read_text())
    finally:
        if before is None:
            os.environ.pop(bar.name, None)
        else:
            os.environ[bar.name] = before
    return cfg if isinstance(cfg, dict) else None


def log_analysis(
    client: MlflowClient,
    tracking_uri: str,
    *,
    run_id: str | None,
    into_source: bool = True,
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    metrics: list[tuple[str, float, int]],
    step_axes: dict[str, str],
    files: list[Path],
) -> tuple[str, bool]:
    """Log into the source run ``run_id`` if it is in this store (and ``into_source``), else into a new linked run
    ``run_name`` of ``experiment`` tagged with the source run id. Returns ``(run id, logged into the source run)``."""
    source = find_run(client, run_id) if into_source else None
    if source is not None:
        target, same = source.info.run_id, True
    else:
        exp_id = ensure_experiment(client, experiment, tracking_uri)
        link = {SOURCE_TAG: run_id} if run_id else {}
        target = client.create_run(exp_id, run_name=run_name, tags={ANALYZE_TAG: "true", **link}).info.run_id
        same = False
    now = int(time.time() * 1000)
    all_tags = {**tags, **{STEP_AXIS_TAG + k: v for k, v in step_axes.items()}}
    tag_list = [RunTag(k, str(v)[:5000]) for k, v in all_tags.items()]
    metric_list = [Metric(k, float(v), now, int(s)) for k, v, s in metrics]
    for i in range(0, max(len(metric_list), len(tag_list)), 900):  # MLflow takes at most 1000 entities per batch
        client.log_batch(target, metrics=metric_list[i : i + 900], tags=tag_list[i : i + 900])
    for f in files:
        client.log_artifact(target, str(f), "analysis")
    if not same:
        client.set_terminated(target, "FINISHED")
    return target, same
