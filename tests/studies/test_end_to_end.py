"""Every installed study end to end at smoke scale: real sweeps (real `normlight fit` processes) into a temporary
sqlite store, measure(), the report folder (report.md, result.json, plots) and the study/NAME MLflow run."""

import json
import shutil

import pytest
from mlflow import MlflowClient

from normlight.studies import OUTCOMES, get_study, list_studies
from normlight.studies.runner import run_study
from normlight.studies.store import experiment_name


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_store_file):
    d = tmp_path_factory.mktemp("studies-store")
    shutil.copy(empty_store_file, d / "mlflow.db")
    return d, f"sqlite:///{d / 'mlflow.db'}"


@pytest.mark.parametrize("name", list_studies())
def test_study_runs_end_to_end_at_smoke_scale(name, store, tmp_path, monkeypatch):
    root, uri = store
    monkeypatch.chdir(root)  # the sweeps' logs and checkpoints go under runs/ of the store's folder
    study = get_study(name)
    rc = run_study(study, "smoke", tracking_uri=uri, workers=2, out=tmp_path / "docs")
    assert rc == 0
    d = tmp_path / "docs" / name / "smoke"
    result = json.loads((d / "result.json").read_text())
    assert result["outcome"] in OUTCOMES and result["rule"] == study.rule and result["scale"] == "smoke"
    assert result["runs"]["finished"] == result["runs"]["planned"] and result["wall_seconds"] > 0
    md = (d / "report.md").read_text()
    assert study.title in md and study.rule in md and f"normlight study run {name} --scale smoke" in md
    assert "## Missing" not in md  # every planned point ran
    for png in d.glob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG" and f"]({png.name})" in md

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment_name(study, "smoke"))
    found = c.search_runs([exp.experiment_id], filter_string=f"tags.`normlight.study` = '{name}'")
    assert len(found) == 1
    run = found[0]
    assert run.info.status == "FINISHED" and run.data.tags["verdict"] == result["outcome"]
    members = [m for m in run.data.tags["members"].split(",") if m]
    assert len(members) == result["runs"]["recorded"]
    for m in members:
        assert c.get_run(m).data.tags["sweep"]  # members are the study's grid-point runs
    arts = {a.path for a in c.list_artifacts(run.info.run_id, "report")}
    assert "report/report.md" in arts and "report/result.json" in arts
