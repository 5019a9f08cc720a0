"""Tracking store defaults and the no-op helpers."""

from __future__ import annotations

from normlight.tracking import mlflow_utils

# ---------------------------------------------------------------- data


def test_tracking_uri_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_utils.default_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    # relative to the store (mlartifacts/ beside the sqlite file), see tests/tracking/test_artifacts.py
    assert mlflow_utils.default_artifact_location(mlflow_utils.default_tracking_uri()) == "mlflow-artifacts:/"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert mlflow_utils.default_tracking_uri() == "http://127.0.0.1:5999"
    assert mlflow_utils.default_artifact_location("http://127.0.0.1:5999") is None
    assert mlflow_utils.get_run_id(None) is None  # helpers are no-ops without a trainer / logger
