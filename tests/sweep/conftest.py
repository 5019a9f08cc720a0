"""Fixtures for sweep tests: a fresh sqlite MLflow store per test, copied from an initialized template."""

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def empty_store_file(tmp_path_factory) -> Path:
    """An initialized, empty MLflow sqlite file (creating the schema takes seconds; copying it does not)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store_file):
    """A fresh sqlite MLflow store URI in tmp_path; the working directory is tmp_path too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store_file, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
