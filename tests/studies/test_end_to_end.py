"""Every installed study end to end at smoke scale: real sweeps (real `normlight fit` processes) into temporary
sqlite stores, measure(), the report folder (report.md, result.json, plots) and the study/NAME MLflow run.

The studies run two at a time (one store each) in a module fixture; each test then checks one study's output.
"""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from mlflow import MlflowClient

from normlight.studies import OUTCOMES, get_study, list_studies
from normlight.studies.runner import run_study
from normlight.studies.store import experiment_name

NAMES = list_studies()


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, empty_store_file):
    """name -> (return code, report folder, store URI), every study run once at smoke scale."""
    root = tmp_path_factory.mktemp("studies")

    def one(name):
        d = root / name
        d.mkdir()
        shutil.copy(empty_store_file, d / "mlflow.db")
        uri = f"sqlite:///{d / 'mlflow.db'}"
        rc = run_study(get_study(name), "smoke", tracking_uri=uri, out=d / "docs", work_dir=d / "runs")
        return name, (rc, d / "docs" / name / "smoke", uri)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, NAMES))


@pytest.mark.parametrize("name", NAMES)
def test_study_runs_end_to_end_at_smoke_scale(name, smoke_runs):
    rc, d, uri = smoke_runs[name]
    assert rc == 0
    study = get_study(name)
    result = json.loads((d / "result.json").read_text())
    assert result["outcome"] in OUTCOMES and result["rule"] == study.rule and result["scale"] == "smoke"
    assert result["runs"]["finished"] == result["runs"]["planned"] and result["wall_seconds"] > 0
    md = (d / "report.md").read_text()
    assert study.title in md and study.rule in md and f"normlight study run {name} --scale smoke" in md
    assert "grid points have no finished run" not in md  # every planned point ran (the smoke grid is one point)
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
