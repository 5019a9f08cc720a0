"""Artifacts are recorded relative to the store, so a copied or moved project keeps and writes its own.

Real MLflow sqlite stores: a run logs an artifact in project A; A is copied to B and A is moved away; in B
the old artifact is still listed and read, and new artifacts (old run and new run) land in B's
``mlartifacts/``, never in A's.
"""

from __future__ import annotations

import shutil

from normlight.tracking import artifacts, sweep_runs


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_moved_store_keeps_and_writes_its_own_artifacts(tmp_path, empty_store_file):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    shutil.copy(empty_store_file, a / "mlflow.db")
    uri_a = f"sqlite:///{a / 'mlflow.db'}"
    client = sweep_runs.client(uri_a)
    exp = sweep_runs.ensure_experiment(client, "moved", uri_a)
    assert client.get_experiment(exp).artifact_location == "mlflow-artifacts:/"  # no absolute path recorded
    (tmp_path / "note.txt").write_text("first")
    old = client.create_run(exp).info.run_id
    client.log_artifact(old, str(tmp_path / "note.txt"), "notes")
    assert client.get_run(old).info.artifact_uri == f"mlflow-artifacts:/{old}/artifacts"
    assert (a / "mlartifacts" / old / "artifacts" / "notes" / "note.txt").read_text() == "first"

    shutil.copytree(a, b)
    gone = a.rename(tmp_path / "a-moved-away")
    # a new process opens the copy: forget the repository MLflow cached per run id in this one
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking_utils._artifact_repos_cache.clear()
    before = _tree(gone)
    uri_b = f"sqlite:///{b / 'mlflow.db'}"
    client = sweep_runs.client(uri_b)
    assert [f.path for f in client.list_artifacts(old, "notes")] == ["notes/note.txt"]
    assert (
        open(client.download_artifacts(old, "notes/note.txt", str(tmp_path))).read() == "first"  # noqa: SIM115
    )
    (tmp_path / "note2.txt").write_text("second")
    client.log_artifact(old, str(tmp_path / "note2.txt"), "notes")
    new = client.create_run(exp).info.run_id
    client.log_artifact(new, str(tmp_path / "note2.txt"))
    assert (b / "mlartifacts" / old / "artifacts" / "notes" / "note2.txt").read_text() == "second"
    assert (b / "mlartifacts" / new / "artifacts" / "note2.txt").read_text() == "second"
    assert _tree(gone) == before and not a.exists()  # nothing written to (or recreated at) the old place


def test_resolution_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert artifacts.artifacts_dir("sqlite:///mlflow.db") == tmp_path / "mlartifacts"
    assert artifacts.artifacts_dir("sqlite:////x/y/store.db") == artifacts.Path("/x/y/mlartifacts")
    assert artifacts.artifacts_dir("http://127.0.0.1:5000") is None
    repo = artifacts.repository("mlflow-artifacts:/abc/artifacts", "sqlite:////x/y/store.db")
    assert repo.artifact_dir == "/x/y/mlartifacts/abc/artifacts"
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    proxied = artifacts.repository("mlflow-artifacts:/abc/artifacts", "http://127.0.0.1:5999")
    assert isinstance(proxied, MlflowArtifactsRepository)  # through a server: MLflow's own proxy
