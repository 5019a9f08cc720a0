"""`normlight study list|run|report|table`: the listing, one `error:` line per bad input (before any run exists),
a report rebuilt from an empty store (partial: inconclusive, says what is missing), and the generated table."""

import json

import pytest
from mlflow import MlflowClient

from normlight.cli import study as cli
from normlight.studies import list_studies
from normlight.studies.report import README_BEGIN, README_END


def _errors(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_list_names_every_study(capsys):
    assert cli.main(["study", "list"]) == 0
    out = capsys.readouterr().out
    for name in list_studies():
        assert name in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "no_such_study"], "unknown study 'no_such_study'; known studies: "),
        (["report", "e2_warmup", "--scale", "huge"], "unknown --scale 'huge'; choose one of smoke, cpu, gpu"),
        (["run", "e2_warmup", "--seeds", "0"], "--seeds must be >= 1"),
        (["run", "e2_warmup", "--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_bad_input_is_one_error_line_and_creates_nothing(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["study", *argv, "--tracking-uri", uri, "--out", str(tmp_path / "docs")]) == 2
    assert needle in _errors(capsys)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "docs").exists()


def test_unknown_study_lists_the_known_ones(capsys):
    assert cli.main(["study", "report", "e2_warmpu"]) == 2
    line = _errors(capsys)
    assert all(name in line for name in list_studies())


def test_dry_run_prints_the_commands_and_creates_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["study", "run", "e3_curse_of_depth", "--dry-run", "--tracking-uri", uri]) == 0
    cmds = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("normlight fit")]
    assert len(cmds) == 6 and all("study-e3_curse_of_depth-cpu" in c for c in cmds)  # 2 placements x 3 seeds
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "docs").exists()


def test_report_on_an_empty_store_is_partial_and_says_what_is_missing(tmp_path, fresh_store, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(["study", "report", "e2_warmup", "--tracking-uri", fresh_store, "--out", str(tmp_path / "docs")]) == 0
    )
    d = tmp_path / "docs" / "e2_warmup"
    result = json.loads((d / "result.json").read_text())
    assert result["outcome"] == "inconclusive" and result["runs"] == {
        "planned": 24,
        "recorded": 0,
        "finished": 0,
        "diverged": 0,
    }
    md = (d / "report.md").read_text()
    assert "## Missing (partial result)" in md and "24 of 24 grid points have no finished run yet" in md
    c = MlflowClient(fresh_store)
    exp = c.get_experiment_by_name("study-e2_warmup-cpu")
    (run,) = c.search_runs([exp.experiment_id])
    assert run.info.run_name == "study/e2_warmup" and run.data.tags["verdict"] == "inconclusive"


def test_table_is_generated_from_result_files(tmp_path, capsys):
    docs = tmp_path / "docs" / "studies"
    for name, outcome, kv in (("e_b", "not reproduced", 0.5), ("e_a", "reproduced", 2.0)):
        (docs / name).mkdir(parents=True)
        result = {
            "name": name,
            "title": f"title {name}",
            "paper": "Someone 2020",
            "outcome": outcome,
            "scale": "cpu",
            "key_metric": "ratio",
            "key_value": kv,
            "runs": {"planned": 4, "finished": 3},
            "wall_seconds": 120.0,
        }
        (docs / name / "result.json").write_text(json.dumps(result))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_BEGIN}\nstale\n{README_END}\nrest\n")
    assert cli.main(["study", "table", "--out", str(docs), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{README_END}\nrest\n") and "stale" not in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| [e_")]
    assert rows[0].startswith("| [e_a](docs/studies/e_a/report.md) | title e_a | Someone 2020 | **reproduced** (cpu)")
    assert "ratio: 2 |" in rows[0] and "3/4" in rows[0] and "2.0 min" in rows[0] and "not reproduced" in rows[1]
    assert "| [e_a](e_a/report.md)" in (docs / "README.md").read_text()


def test_table_refuses_a_readme_without_markers(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("no markers\n")
    assert cli.main(["study", "table", "--out", str(tmp_path / "docs"), "--readme", str(tmp_path / "README.md")]) == 2
    assert "has no generated studies section" in _errors(capsys)
