"""Tracking: the only part of normlight that talks to MLflow.

- :mod:`normlight.tracking.mlflow_utils`: the store defaults (``sqlite:///<cwd>/mlflow.db`` + ``<cwd>/mlartifacts``),
  the :class:`MLFlowLogger` used by every config, and rank-0-only helpers (tags, metrics, artifacts, run id);
- :mod:`normlight.tracking.config_callback`: logs the resolved LightningCLI config as an artifact and flat params;
- :mod:`normlight.tracking.artifacts`: artifacts recorded relative to the store (``mlflow-artifacts:/``);
- :mod:`normlight.tracking.ui`: ``normlight ui``, the MLflow UI on this project's store, and its links;
- :mod:`normlight.tracking.presentation`: the end-of-fit result line, the experiment's UI view, sweep parents;
- :mod:`normlight.tracking.compare`: ``normlight compare``.

Submodules are imported on first use, so ``import normlight.tracking`` stays cheap.
"""

from __future__ import annotations

import importlib


def __getattr__(name: str):
    if name in ("MLFlowLogger", "default_tracking_uri"):
        return getattr(importlib.import_module("normlight.tracking.mlflow_utils"), name)
    if name == "MLflowConfigCallback":
        return importlib.import_module("normlight.tracking.config_callback").MLflowConfigCallback
    raise AttributeError(f"module 'normlight.tracking' has no attribute {name!r}")
