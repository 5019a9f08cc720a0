"""Bad input to `normlight fit` through the real CLI: one `error:` line naming the option and the fix, no usage
block, no traceback, and nothing recorded (no MLflow run, no checkpoint); unsafe checkpoints are never unpickled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from normlight import cli
from tests.cli.helpers import NANO

CKPT_CB = "lightning.pytorch.callbacks.ModelCheckpoint"


class Payload:
    """Unpickling this runs code: it writes the file ``pwned`` (what a crafted checkpoint would do)."""

    def __reduce__(self):
        return (exec, ("open('pwned', 'w').write('code ran')",))


def _checkpoint(path: Path, **hparams) -> Path:
    """A normlight-style checkpoint holding only what the conflict check reads."""
    hp = {"_class_path": "normlight.tasks.CausalLanguageModeling", "model": "gpt-nano", **hparams}
    torch.save({"state_dict": {}, "hyper_parameters": hp, "normlight": {"mlflow_run_id": None}}, path)
    return path


def _setup(tmp: Path) -> dict[str, list[str]]:
    """Files for the cases; returns the extra arguments of each case by id."""
    (tmp / "empty.txt").write_text("")
    (tmp / "tiny.txt").write_text("a short text " * 4)
    (tmp / "story.txt").write_text("the norm keeps the residual stream stable. " * 40)
    (tmp / "garbage.ckpt").write_bytes(b"\x00garbage, not a checkpoint" * 10)
    real = _checkpoint(tmp / "real.ckpt", norm="rmsnorm")
    (tmp / "truncated.ckpt").write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    torch.save({"state_dict": {}, "extra": Payload()}, tmp / "crafted.ckpt")
    (tmp / "fixed").mkdir()
    torch.save({"state_dict": {}, "extra": Payload()}, tmp / "fixed" / "last.ckpt")
    _checkpoint(tmp / "layernorm.ckpt", norm="layernorm", placement="pre")
    (tmp / "fixed-ln").mkdir()
    _checkpoint(tmp / "fixed-ln" / "last.ckpt", norm="layernorm", placement="pre")
    (tmp / "a-file").write_text("not a folder")
    fixed = lambda d: ["--trainer.callbacks", json.dumps([{"class_path": CKPT_CB, "init_args": {"dirpath": str(d)}}])]  # noqa: E731
    text = lambda name, *more: ["--data", "TextFilesDataModule", "--data.paths", str(tmp / name), *more]  # noqa: E731
    return {
        "batch_size 0": ["--data.batch_size", "0"],
        "negative lr": ["--model.lr", "-1"],
        "empty corpus": text("empty.txt"),
        "block larger than corpus": text("tiny.txt", "--data.block_size", "32"),
        "val_check_interval": text("story.txt", "--data.block_size", "8", "--trainer.val_check_interval", "1000"),
        "missing checkpoint": ["--ckpt_path", str(tmp / "missing.ckpt")],
        "garbage checkpoint": ["--ckpt_path", str(tmp / "garbage.ckpt")],
        "truncated checkpoint": ["--ckpt_path", str(tmp / "truncated.ckpt")],
        "crafted checkpoint": ["--ckpt_path", str(tmp / "crafted.ckpt")],
        "crafted last.ckpt": [*fixed(tmp / "fixed"), "--ckpt_path", "last"],
        "conflicting checkpoint": ["--model.placement", "peri", "--ckpt_path", str(tmp / "layernorm.ckpt")],
        "conflicting last.ckpt": [*fixed(tmp / "fixed-ln"), "--model.placement", "peri", "--ckpt_path", "last"],
        "unwritable checkpoint folder": ["--trainer.default_root_dir", str(tmp / "a-file" / "runs")],
        "parse error": ["--trainer.max_steps", "abc"],
    }


CASES = {
    "batch_size 0": "data.batch_size must be a positive integer, got 0",
    "negative lr": "model.lr must be a positive number, got -1",
    "empty corpus": "the corpus is empty",
    "block larger than corpus": "set --data.block_size",
    "val_check_interval": "trainer.val_check_interval=1000 is larger than the",
    "missing checkpoint": "missing.ckpt: no such file",
    "garbage checkpoint": "garbage.ckpt: cannot be read safely: it is truncated or not a PyTorch checkpoint",
    "truncated checkpoint": "truncated.ckpt: cannot be read safely: it is truncated or not a PyTorch checkpoint",
    "crafted checkpoint": "crafted.ckpt: cannot be read safely: it holds objects other than tensors",
    "crafted last.ckpt": "last.ckpt: cannot be read safely: it holds objects other than tensors",
    "conflicting checkpoint": "model.norm='layernorm' vs 'rmsnorm'; model.placement='pre' vs 'peri'",
    "conflicting last.ckpt": "model.norm='layernorm' vs 'rmsnorm'; model.placement='pre' vs 'peri'",
    "unwritable checkpoint folder": "is not writable",
    "parse error": 'Parser key "trainer.max_steps"',
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_nothing_is_recorded(case, tmp_path, monkeypatch, capsys, fresh_store):
    monkeypatch.chdir(tmp_path)
    extra = _setup(tmp_path)[case]
    code = cli.main(
        ["fit", *NANO, "--trainer.max_steps", "2", "--trainer.logger.init_args.tracking_uri", fresh_store, *extra]
    )
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 1 and len(lines) == 1 and CASES[case] in lines[0], err
    assert "Traceback" not in err and "usage:" not in err and "usage:" not in out
    client = MlflowClient(fresh_store)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []
    assert not [p for p in tmp_path.rglob("*.ckpt") if p.parent == tmp_path / "runs" or "checkpoints" in p.parts]
    assert not (tmp_path / "pwned").exists()  # nothing in a crafted checkpoint ran


def test_checkpoint_folder_lost_mid_run_stops_with_one_line_and_the_run_killed(
    tmp_path, monkeypatch, capsys, fresh_store
):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "ckpts"
    callbacks = [
        {"class_path": CKPT_CB, "init_args": {"dirpath": str(folder), "every_n_train_steps": 3}},
        {"class_path": "tests.cli.helpers.BreakFolderAtStep", "init_args": {"folder": str(folder), "step": 4}},
    ]
    args = ["fit", *NANO, "--trainer.max_steps", "20", "--trainer.logger.init_args.tracking_uri", fresh_store]
    assert cli.main([*args, "--trainer.callbacks", json.dumps(callbacks)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "cannot write checkpoint" in lines[0] and "--ckpt_path last" in lines[0], err
    assert "Traceback" not in err
    client = MlflowClient(fresh_store)
    (run,) = client.search_runs([client.get_experiment_by_name("normlight").experiment_id])
    assert run.info.status == "KILLED"
    # steps 0-4 logged; the step whose checkpoint could not be written (5) stops before its metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(5))


def test_conflicting_resume_of_a_real_fit_in_a_fixed_folder_is_refused_with_last(
    tmp_path, monkeypatch, capsys, fresh_store
):
    """A fit into the user's own checkpoint folder (``dirpath`` set, ``save_last`` left unset) writes the
    ``last.ckpt`` that ``--ckpt_path last`` finds: a conflicting resume is refused before any run is created
    (before, no ``last.ckpt`` was written there, so ``last`` silently trained a new model from scratch)."""
    monkeypatch.chdir(tmp_path)
    fixed = ["--trainer.callbacks", json.dumps([{"class_path": CKPT_CB, "init_args": {"dirpath": "fixed"}}])]
    args = ["fit", *NANO, "--trainer.logger.init_args.tracking_uri", fresh_store, *fixed]
    ln = ["--model.norm", "layernorm", "--model.placement", "pre"]
    assert cli.main([*args, *ln, "--trainer.max_steps", "2"]) == 0
    assert (tmp_path / "fixed" / "last.ckpt").is_file()
    capsys.readouterr()
    code = cli.main([*args, "--model.placement", "peri", "--trainer.max_steps", "4", "--ckpt_path", "last"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(lines) == 1, err
    assert "model.norm='layernorm' vs 'rmsnorm'; model.placement='pre' vs 'peri'" in lines[0], err
    client = MlflowClient(fresh_store)
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 1  # the first fit's
