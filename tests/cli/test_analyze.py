"""`normlight analyze` end to end: gpt-nano checkpoints trained in the test (real LightningCLI, Trainer, sqlite MLflow),
analyzed into the SAME MLflow runs, then put side by side by `normlight compare`; bad input fails with one clear
`error:` line before any run is created.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from normlight import cli
from normlight.cli import train
from normlight.tracking.compare import compare, step_axis
from tests.helpers import ROOT

NANO = [
    "--model=CausalLanguageModeling",
    "--model.model=gpt-nano",
    "--model.lr=3e-3",
    "--model.warmup_steps=1",
    "--model.sample_tokens=0",
    "--data=PydocTextDataModule",
    "--data.block_size=32",
    "--data.batch_size=4",
    "--trainer.max_steps=3",
    "--trainer.val_check_interval=3",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.logger.init_args.experiment_name=ana",
    "--diagnostics.every_n_steps=100",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two gpt-nano runs (pre, peri) of 3 steps each, in one sqlite store: (workdir, uri, {placement: ckpt})."""
    work = tmp_path_factory.mktemp("analyze")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    ckpts = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for placement in ("pre", "peri"):
                args = [
                    "fit",
                    *NANO,
                    f"--model.placement={placement}",
                    f"--trainer.logger.init_args.tracking_uri={uri}",
                ]
                assert train.main(args) == 0
                found = sorted((work / "runs" / "checkpoints" / "ana").glob(f"gpt-nano_{placement}_*/*/last.ckpt"))
                ckpts[placement] = found[0]
        finally:
            torch.set_num_threads(threads)
    return work, uri, ckpts


def _runs(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ana")
    return client, client.search_runs([exp.experiment_id])


def test_analyze_logs_into_the_training_run_and_compare_puts_runs_side_by_side(trained, monkeypatch, capsys):
    work, uri, ckpts = trained
    monkeypatch.chdir(work)
    opts = "{removal_curve: {scores: [bi, random]}}"
    for placement in ("pre", "peri"):
        argv = [
            "analyze",
            f"--ckpt_path={ckpts[placement]}",
            "--batches=1",
            f"--tracking-uri={uri}",
            f"--options={opts}",
        ]
        assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "logged to MLflow run" in out and "its training run" in out

    client, runs = _runs(uri)
    assert len(runs) == 2  # no extra run: the analysis lives in the training runs
    for run in runs:
        m, tags = run.data.metrics, run.data.tags
        assert "val/loss" in m and "analysis/removal_curve/max_removed/bi" in m
        hist = client.get_metric_history(run.info.run_id, "analysis/removal_curve/loss/bi")
        assert sorted(p.step for p in hist) == [0, 1]  # k = 0..L-1 blocks removed (gpt-nano has 2)
        assert tags["step_axis/analysis/removal_curve/loss/bi"] == "blocks removed"
        assert tags["step_axis/analysis/block_influence/bi/block"] == "layer"
        assert tags["analysis.ckpt_step"] == "3"
        arts = {a.path for a in client.list_artifacts(run.info.run_id, "analysis")}
        assert {"analysis/summary.md", "analysis/removal_curve.png", "analysis/analysis.json"} <= arts
        lens = m["analysis/logit_lens/final/loss"]
        assert lens == pytest.approx(m["analysis/removal_curve/baseline/loss"])
    report = next((work / "runs" / "analyze").glob("*pre*step3"))
    assert (report / "angular_distance.distance.png").is_file() and (report / "removal_curve.curve.csv").is_file()

    result = compare(client, "ana", ["placement"], "analysis/removal_curve/loss/bi", work / "cmp")
    assert [r[0] for r in result["rows"]] == ["peri", "pre"]
    assert any(Path(f).name == "curves.png" for f in result["files"])
    assert step_axis(runs, "analysis/removal_curve/loss/bi") == "blocks removed"
    assert step_axis(runs, "val/loss") == "step"


def test_linked_run_config_input_and_bad_input(trained, monkeypatch, capsys, tmp_path):
    work, uri, ckpts = trained
    monkeypatch.chdir(work)
    _, before = _runs(uri)
    # a linked analyze/... run instead of the training run
    argv = ["analyze", f"--ckpt_path={ckpts['pre']}", "--batches=1", f"--tracking-uri={uri}", "--log-to=linked"]
    assert cli.main([*argv, "--analyses=logit_lens,block_influence"]) == 0
    client, after = _runs(uri)
    linked = [r for r in after if r.data.tags.get("normlight.analyze") == "true"]
    assert len(linked) == 1 and len(after) == len(before) + 1
    source = next(r for r in before if r.data.tags.get("placement") == "pre")
    assert linked[0].data.tags["normlight.analyze.source_run"] == source.info.run_id
    assert linked[0].info.run_name.startswith("analyze/") and linked[0].data.tags["placement"] == "pre"
    assert "analysis/logit_lens/final/loss" in linked[0].data.metrics

    # an untrained model from a config, data from the config, no MLflow
    cfg = ROOT / "configs" / "gpt" / "nano.yaml"
    out = tmp_path / "fresh"
    assert (
        cli.main(
            ["analyze", f"--config={cfg}", "--batches=1", "--analyses=logit_lens", "--log-to=none", f"--out={out}"]
        )
        == 0
    )
    assert (out / "summary.md").read_text().count("logit_lens") >= 1
    capsys.readouterr()

    # bad input: one error line each, nothing recorded
    pickle_ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": Path("x")}, pickle_ckpt)  # needs a full unpickler
    empty_store = f"sqlite:///{tmp_path / 'other.db'}"
    cases = [
        (["analyze", "--ckpt_path=missing.ckpt"], "checkpoint missing.ckpt not found"),
        (["analyze", f"--ckpt_path={pickle_ckpt}"], "cannot be read with torch.load(weights_only=True)"),
        (["analyze", f"--ckpt_path={ckpts['pre']}", "--analyses=removal_curv"], "unknown analysis 'removal_curv'"),
        (["analyze", f"--ckpt_path={ckpts['pre']}", f"--tracking-uri={empty_store}"], "no evaluation data"),
        (["analyze", f"--ckpt_path={ckpts['pre']}", "--data=NoSuchData"], "data class 'NoSuchData' cannot be imported"),
        (["analyze"], "needs one model: --ckpt_path"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (argv, err)
    _, final = _runs(uri)
    assert len(final) == len(after)


def test_analyze_a_pretrained_nanogpt_checkpoint(tmp_path, monkeypatch, capsys):
    """--init_from: a model imported with load_pretrained (here a nanoGPT ckpt.pt) is analyzed on --data."""
    from tests.models import nanogpt_layout

    monkeypatch.chdir(tmp_path)
    torch.save(nanogpt_layout.make_checkpoint(vocab_size=256, block_size=32), tmp_path / "ckpt.pt")
    data = "{class_path: PydocTextDataModule, init_args: {block_size: 32, batch_size: 2}}"
    args = ["analyze", "--init_from", f"nanogpt:{tmp_path / 'ckpt.pt'}", "--data", data]
    assert cli.main([*args, "--analyses", "block_influence,logit_lens", "--batches", "1", "--log-to", "none"]) == 0
    out = capsys.readouterr().out
    assert "(2 blocks)" in out
    report = next((tmp_path / "runs" / "analyze").glob("ckpt*"))
    assert (report / "summary.md").is_file()
    assert cli.main(["analyze", "--init_from", "nanogpt:/nonexistent/ckpt.pt", "--data", data]) == 1
    assert capsys.readouterr().err.startswith("error: --init_from nanogpt:/nonexistent/ckpt.pt")
