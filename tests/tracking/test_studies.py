"""tracking.studies: the study run's member tags survive MLflow's tag-length limit; reading never creates a store."""

from normlight.tracking.studies import log_study_run, read_points, study_runs


def test_long_member_lists_are_split_and_read_back(fresh_store, tmp_path):
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "report.md").write_text("# r\n")
    members = [f"{i:032x}" for i in range(400)]  # 400 x 33 characters: beyond one 5000-character tag
    run_id = log_study_run(
        fresh_store,
        "study-x-cpu",
        "x",
        tags={"verdict": "reproduced"},
        members=members,
        metrics={"ratio": 2.0, "bad": float("nan"), "max |Δlogits|": 1e-6},
        report_dir=tmp_path / "rep",
        extra={"a": 1},
    )
    (found,) = study_runs(fresh_store, "study-x-cpu", "x")
    assert found["run_id"] == run_id and found["verdict"] == "reproduced" and found["members"] == members
    from mlflow import MlflowClient

    run = MlflowClient(fresh_store).get_run(run_id)
    assert set(run.data.metrics) == {"ratio", "max __logits_"}  # nan dropped, name made valid for MLflow
    assert run.info.status == "FINISHED" and "members.1" in run.data.tags


def test_reading_a_missing_store_creates_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    assert read_points(uri, "study-x-cpu", "s", ["abc"]) == {} and study_runs(uri, "study-x-cpu", "x") == []
    assert not (tmp_path / "none.db").exists()
