"""configs/strategy/*.yaml compose with full configs (LightningCLI ``-c full.yaml -c fragment.yaml``).

In-process and single-device. Training with the fragments is in test_strategies_cli.py (ddp.yaml, and
fsdp2.yaml + bf16.yaml composed) and test_bf16_all_norms.py (bf16-mixed for every norm).
"""

import importlib

import pytest
import torch
import yaml

from normlight.blocks.base import Block
from normlight.cli import train
from tests.helpers import ROOT

STRATEGY = ROOT / "configs" / "strategy"
FULL = {"gpt": ROOT / "configs/gpt/nano.yaml", "resnet": ROOT / "configs/resnet/resnet20.yaml"}


def print_config(capsys, *configs, extra=()):
    """The composed config LightningCLI would run, as a dict."""
    args = ["fit", *(a for c in configs for a in ("-c", str(c))), *extra, "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        train.main(args)
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_fragments_are_fragments():
    """Each fragment sets only trainer options, so it composes with any model family."""
    for path in sorted(STRATEGY.glob("*.yaml")):
        assert set(yaml.safe_load(path.read_text())) == {"trainer"}, path.name


@pytest.mark.parametrize("family", sorted(FULL))
def test_fragments_compose_with_full_configs(family, capsys):
    ddp = print_config(capsys, FULL[family], STRATEGY / "ddp.yaml", STRATEGY / "bf16.yaml")
    assert ddp["trainer"]["strategy"] == "ddp" and ddp["trainer"]["devices"] == 2
    assert ddp["trainer"]["precision"] == "bf16-mixed"
    assert ddp["model"]["init_args"]["model"] in ("gpt-nano", "resnet20")  # the full config survives
    fsdp2 = print_config(capsys, FULL[family], STRATEGY / "fsdp2.yaml")["trainer"]["strategy"]
    assert fsdp2["class_path"].endswith("ModelParallelStrategy")
    assert fsdp2["init_args"]["data_parallel_size"] == 2 and fsdp2["init_args"]["tensor_parallel_size"] == 1
    fsdp = print_config(capsys, FULL[family], STRATEGY / "fsdp.yaml")["trainer"]
    assert fsdp["strategy"]["class_path"].endswith("FSDPStrategy") and fsdp["accelerator"] == "gpu"
    (policy,) = fsdp["strategy"]["init_args"]["auto_wrap_policy"]
    module, name = policy.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is Block  # one FSDP unit per transformer block


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine fsdp.yaml is exercised by the GPU check")
def test_fsdp_fragment_fails_clearly_on_cpu(tmp_path, monkeypatch, capsys):
    """Lightning's FSDPStrategy is GPU-only: ONE `error:` line says so and names the CPU-capable fsdp2.yaml;
    no traceback, no run recorded."""
    from normlight import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = ["fit", "-c", str(FULL["gpt"]), "-c", str(STRATEGY / "fsdp.yaml"), "--trainer.max_steps", "1"]
    for extra, message in (
        ([], "No supported gpu backend found"),
        (["--trainer.accelerator", "cpu"], "requires a GPU"),
    ):
        assert cli.main(base + extra) == 1
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: the trainer section") and message in lines[0], err
        assert "fsdp2.yaml" in lines[0]
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert not (tmp_path / "runs").exists()
