"""Fixtures for sweep tests: a fresh sqlite MLflow store per test, copied from an initialized template
(``empty_store_file`` in tests/conftest.py)."""

import shutil

import pytest


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store_file):
    """A fresh sqlite MLflow store URI in tmp_path; the working directory is tmp_path too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(empty_store_file, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
