"""`normlight fit --model.init_from SOURCE`: fine-tune a pretrained checkpoint through the real LightningCLI,
Trainer and MLflow store; a bad source is one clear error before any run exists."""

from __future__ import annotations

import math

import torch

from normlight import cli
from normlight.cli import train
from tests.cli.test_train import NANO, _runs
from tests.models import nanogpt_layout


def nanogpt_ckpt(path):
    """A float32 nanoGPT ckpt.pt (compiled: `_orig_mod.` keys) with the byte-level data's 256-token vocabulary."""
    ckpt = nanogpt_layout.make_checkpoint(vocab_size=256, block_size=64, n_embd=32, compiled=True)
    ckpt["model"] = {k: v.float() for k, v in ckpt["model"].items()}
    torch.save(ckpt, path)
    return ckpt


def test_fit_from_a_nanogpt_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ckpt = nanogpt_ckpt(tmp_path / "ckpt.pt")
    source = f"nanogpt:{tmp_path / 'ckpt.pt'}"
    args = ["fit", *NANO, "--model.norm", "layernorm", "--model.init_from", source, "--trainer.max_steps", "2"]
    assert train.main(args) == 0
    client, (run,) = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "e2e")
    assert run.data.tags["init_from"] == source and run.info.run_name.startswith(source + "/pre/layernorm/")
    assert run.data.params["model.init_from"] == source
    # the checkpoint's model (dim 32), not the preset gpt-nano (dim 64, 120,576 parameters); tied head counted once
    n = sum(v.numel() for k, v in ckpt["model"].items() if not k.endswith("lm_head.weight"))
    assert run.data.tags["num_params"] == str(n) != "120576"
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(loss) == 2 and all(math.isfinite(m.value) for m in loss)


def test_a_bad_source_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    missing = tmp_path / "nope" / "ckpt.pt"
    assert cli.main(["fit", *NANO, "--model.init_from", f"nanogpt:{missing}", "--trainer.max_steps", "2"]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and f"no such file '{missing}'" in lines[0] and "Traceback" not in err
    _, runs = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "e2e")
    assert runs == []
