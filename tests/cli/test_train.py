"""End to end through the real LightningCLI, Trainer and MLflow sqlite store (no mocks).

- a GPT fit records params, tags, per-step/per-validation metrics, the config and a text sample;
- an interrupted run (small max_steps) leaves last.ckpt, and `--ckpt_path last` continues the SAME run;
- a vision fit logs accuracies equal to an independent recomputation from the saved checkpoint;
- bad input fails before any training step with one clear `error:` line and no recorded run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from normlight import cli
from normlight.cli import train

NANO = [
    "--model",
    "CausalLanguageModeling",
    "--model.model",
    "gpt-nano",
    "--model.norm",
    "rmsnorm",
    "--model.lr",
    "3e-3",
    "--model.warmup_steps",
    "2",
    "--model.min_lr_ratio",
    "0.1",
    "--model.sample_tokens",
    "8",
    "--data",
    "PydocTextDataModule",
    "--data.block_size",
    "32",
    "--data.batch_size",
    "4",
    "--trainer.val_check_interval",
    "2",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.log_every_n_steps",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
    "--trainer.logger.init_args.experiment_name",
    "e2e",
    "--diagnostics.every_n_steps",
    "2",
]


def _runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id]))


def test_gpt_fit_then_resume_continues_the_same_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # explicit URI via flag (not the cwd default)
    (tmp_path / "store").mkdir()
    base = ["fit", *NANO, "--trainer.logger.init_args.tracking_uri", uri]
    assert train.main([*base, "--trainer.max_steps", "4"]) == 0  # "interrupted" after 4 of 6 steps

    client, runs = _runs(uri, "e2e")
    (run,) = runs
    rid = run.info.run_id
    assert run.info.run_name == "gpt-nano/pre/rmsnorm/lr3e-3/s0"
    tags = run.data.tags
    assert {tags[k] for k in ("family", "preset", "norm", "placement", "qk_norm")} >= {
        "gpt",
        "gpt-nano",
        "rmsnorm",
        "pre",
    }
    assert tags["qk_norm"] == "None"
    assert tags["norm_dist"] == "normlight" and tags["placement_dist"] == "normlight" and tags["norm_version"]
    assert tags["normlight_version"] and len(tags["git_commit"]) >= 40
    params = run.data.params
    assert params["model.norm"] == "rmsnorm" and params["model.lr"] == "0.003"
    assert params["data.block_size"] == "32" and params["trainer.max_steps"] == "4" and params["seed_everything"] == "0"
    assert "_instantiator" not in params and "lr" not in params  # one flat namespace, from the resolved config
    loss = client.get_metric_history(rid, "train/loss")
    assert [m.step for m in loss] == [0, 1, 2, 3] and all(math.isfinite(m.value) for m in loss)
    assert [m.step for m in client.get_metric_history(rid, "val/loss")] == [1, 3]
    ppl = client.get_metric_history(rid, "val/ppl")[-1].value
    assert ppl == pytest.approx(math.exp(client.get_metric_history(rid, "val/loss")[-1].value), rel=1e-5)
    # the logged learning rate follows linear warmup (2 steps) then cosine to 0.1 * lr over max_steps=4
    lrs = [m.value for m in sorted(client.get_metric_history(rid, "lr"), key=lambda m: m.step)]
    expect = [
        3e-3 * (s + 1) / 3 if s < 2 else 3e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 2)))
        for s in range(4)
    ]
    assert lrs == pytest.approx(expect, rel=1e-5)
    arts = {a.path for a in client.list_artifacts(rid)}
    assert "config.yaml" in arts
    assert [a.path for a in client.list_artifacts(rid, "samples")] == [
        "samples/step_0000002.txt",
        "samples/step_0000004.txt",
    ]
    ckpts = list((tmp_path / "runs" / "checkpoints" / "e2e").glob("*/*/last.ckpt"))
    assert len(ckpts) == 1
    assert torch.load(ckpts[0], weights_only=True)["normlight"]["mlflow_run_id"] == rid

    assert train.main([*base, "--trainer.max_steps", "6", "--ckpt_path", "last"]) == 0
    client, runs = _runs(uri, "e2e")
    assert [r.info.run_id for r in runs] == [rid]  # same run, no second one
    assert runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(rid, "train/loss")] == [0, 1, 2, 3, 4, 5]
    assert runs[0].data.params["trainer.max_steps"] == "4"  # params are never rewritten ...
    arts = {a.path for a in client.list_artifacts(rid)}
    assert "config.fit.1.yaml" in arts  # ... the resumed config is recorded beside the original
    assert torch.load(ckpts[0], weights_only=True)["global_step"] == 6

    # `normlight test` on that checkpoint reports into the same run as well
    test_args = [a for a in base if a != "fit"]
    assert (
        train.main(
            [
                "test",
                *test_args[: test_args.index("--trainer.val_check_interval")],
                "--trainer.limit_test_batches",
                "2",
                "--trainer.accelerator",
                "cpu",
                "--trainer.logger.init_args.experiment_name",
                "e2e",
                "--trainer.logger.init_args.tracking_uri",
                uri,
                "--ckpt_path",
                str(ckpts[0]),
            ]
        )
        == 0
    )
    client, runs = _runs(uri, "e2e")
    assert [r.info.run_id for r in runs] == [rid]
    assert math.isfinite(runs[0].data.metrics["test/ppl"])


def test_vision_fit_accuracy_matches_independent_count(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")  # env var is honoured
    args = [
        "fit",
        "--model",
        "ImageClassification",
        "--model.model",
        "vit-tiny",
        "--model.norm",
        "layernorm",
        "--model.model_kwargs",
        json.dumps({"img_size": 16, "in_chans": 1, "depth": 1, "dim": 32, "num_heads": 2}),
        "--model.lr",
        "3e-3",
        "--model.label_smoothing",
        "0.1",
        "--data",
        "DigitsDataModule",
        "--data.img_size",
        "16",
        "--data.in_chans",
        "1",
        "--data.batch_size",
        "128",
        "--trainer.max_steps",
        "6",
        "--trainer.val_check_interval",
        "6",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.accelerator",
        "cpu",
        "--trainer.logger.init_args.experiment_name",
        "vision",
        "--diagnostics.every_n_steps",
        "3",
    ]
    assert train.main(args) == 0
    assert (tmp_path / "env.db").exists() and not (tmp_path / "mlflow.db").exists()
    client, (run,) = _runs(f"sqlite:///{tmp_path / 'env.db'}", "vision")
    assert run.data.tags["family"] == "vit" and run.data.tags["placement"] == "pre"
    m = run.data.metrics
    (ckpt,) = (tmp_path / "runs" / "checkpoints" / "vision").glob("*/*/last.ckpt")

    from normlight.data import DigitsDataModule
    from normlight.tasks import ImageClassification

    task = ImageClassification.load_from_checkpoint(ckpt, map_location="cpu").eval()
    dm = DigitsDataModule(img_size=16, in_chans=1)
    dm.setup()
    with torch.no_grad():
        xs, ys = zip(*(dm.val_set[i] for i in range(len(dm.val_set))))
        logits = task(torch.stack(xs)).numpy()
    y = np.array([int(v) for v in ys])
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert m["val/acc1"] == pytest.approx(float(np.mean(top5[:, 0] == y)), abs=1e-6)
    assert m["val/acc5"] == pytest.approx(float(np.mean((top5 == y[:, None]).any(1))), abs=1e-6)
    shifted = logits - logits.max(1, keepdims=True)
    nll = -(shifted[np.arange(len(y)), y] - np.log(np.exp(shifted).sum(1)))
    assert m["val/loss"] == pytest.approx(float(nll.mean()), rel=1e-4)  # plain CE (no smoothing) at validation


BAD = [
    (["--model.norm", "rmsnrm"], "unknown norm 'rmsnrm'. Did you mean 'rmsnorm'?"),
    (["--model.placement", "prenorm"], "unknown placement 'prenorm'"),
    (["--model.model", "gpt-huge"], "unknown model 'gpt-huge'"),
    (["--model.norm_kwargs", "{foo: 1}"], "does not accept option 'foo'"),
    (["--data.block_size", "128"], "sequence length: the data gives 128, the model expects at most max_seq_len=64"),
    (["--model.model_kwargs", "{vocab_size: 100}"], "vocabulary size: the data gives 256"),
    (["--data", "TextFilesDataModule", "--data.paths", "/nonexistent/corpus"], "/nonexistent/corpus matches no file"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[b[1][:24] for b in BAD])
def test_bad_input_is_one_clear_error_before_training(extra, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cli.main(["fit", *NANO, "--trainer.max_steps", "2", *extra]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    _, runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "e2e")
    assert runs == []  # nothing was recorded: it failed before the run started
    assert not list(Path(tmp_path).rglob("*.ckpt"))


def test_vision_shape_mismatches(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = [
        "fit",
        "--model",
        "ImageClassification",
        "--model.model",
        "vit-tiny",
        "--data",
        "DigitsDataModule",
        "--trainer.max_steps",
        "1",
        "--trainer.accelerator",
        "cpu",
    ]
    for extra, message in (
        (["--data.img_size", "16", "--data.in_chans", "3"], "image size: the data gives 16"),
        (["--data.img_size", "32", "--data.in_chans", "1"], "input channels: the data gives 1"),
        (
            ["--model.model_kwargs", "{num_classes: 5}", "--data.img_size", "32", "--data.in_chans", "3"],
            "number of classes: the data gives 10, the model expects 5",
        ),
    ):
        assert cli.main([*base, *extra]) == 1
        assert message in capsys.readouterr().err


def test_ctrl_c_leaves_a_resumable_checkpoint_and_a_recorded_run(tmp_path, monkeypatch):
    """A real interruption: SIGINT to a training process, then `--ckpt_path last` continues its MLflow run.

    Ctrl-C used to raise KeyboardInterrupt wherever the main thread was, often inside an MLflow sqlite write:
    the interrupted transaction kept the store locked, marking the run failed waited on it, and the process could
    hang at exit. Now it stops at the next step boundary, so it exits promptly with 130 and the run KILLED.
    """
    import os
    import signal
    import subprocess
    import sys
    import time

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "fit",
        *NANO,
        "--trainer.max_steps",
        "100000",
        "--trainer.val_check_interval",
        "1000",
        "--diagnostics.every_n_steps",
        "1000",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "fit.log"  # a file, not a pipe: a full pipe would block the child
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "normlight", *args],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.time() + 240
        while True:  # wait until the run has logged a few steps
            time.sleep(0.5)
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "training never started"
            try:
                _, runs = _runs(uri, "e2e")
            except Exception:  # noqa: BLE001 - the store may still be being created
                continue
            if runs and len(MlflowClient(uri).get_metric_history(runs[0].info.run_id, "train/loss")) >= 3:
                break
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGABRT)  # a hang: faulthandler writes every thread's stack into the log
            proc.wait()
    out = log.read_text()
    assert proc.returncode == 130 and "interrupted at step" in out, out
    client, (run,) = _runs(uri, "e2e")
    assert run.info.status == "KILLED" and len(client.get_metric_history(run.info.run_id, "train/loss")) >= 3
    assert "summary/diverged" in run.data.metrics
    (ckpt,) = (tmp_path / "runs" / "checkpoints" / "e2e").glob("*/*/last.ckpt")
    step = torch.load(ckpt, weights_only=True)["global_step"]
    assert step >= 3

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args[args.index("100000")] = str(step + 2)
    assert train.main([*args, "--ckpt_path", "last"]) == 0
    client, runs = _runs(uri, "e2e")
    assert [r.info.run_id for r in runs] == [run.info.run_id] and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == list(range(step + 2)), (steps, step)  # one history, each step once
