"""Credentials in tracking URIs: redacted in any text, moved into MLflow's own variables for http(s) stores."""

from __future__ import annotations

import os

from normlight.tracking.credentials import has_secret, move_to_env, redact


def test_redact_userinfo_and_secret_query_values_anywhere_in_text():
    text = (
        "store http://alice:s3cret@mlflow.example:5000/ and postgresql://bob:pw%40x@db/mlflow, "
        "https://h/api?run=1&token=abc123&x=2 and s3://bucket/key?sig=zz#frag; plain sqlite:////tmp/m.db"
    )
    out = redact(text)
    for secret in ("alice", "s3cret", "bob:pw", "abc123", "sig=zz"):
        assert secret not in out
    assert "http://***@mlflow.example:5000/" in out and "postgresql://***@db/mlflow" in out
    assert "token=***&x=2" in out and "sqlite:////tmp/m.db" in out and "run=1" in out
    assert not has_secret("http://127.0.0.1:5000") and has_secret("http://u:p@127.0.0.1:5000")


def test_move_to_env_strips_http_userinfo(monkeypatch):
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    assert move_to_env("http://alice:p%40ss@127.0.0.1:5000/x") == "http://127.0.0.1:5000/x"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"
    assert move_to_env("https://carol:other@h") == "https://h"  # stripped; the variables already set win
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    db = "postgresql://bob:pw@db/mlflow"
    assert move_to_env(db) == db  # a database driver needs its userinfo: only redacted in output
