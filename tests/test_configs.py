"""Every runnable YAML under configs/ parses and trains one step (litgpt's config-hub test).

A config is runnable if it has a top-level ``model:`` key (configs/sweeps and configs/strategy hold fragments
owned and tested elsewhere). Big presets are shrunk to depth 1 through ``model_kwargs`` (merged, not replaced);
real-data configs read tiny files written in the real formats.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from normlight import data as data_modules
from normlight.cli import train
from tests.data import fakedata

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUNNABLE = sorted(p for p in CONFIGS.rglob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))
BIG = {"gpt-tiny", "gpt-small", "gpt-medium", "vit-tiny", "vit-small", "vit-base"}


def test_every_family_has_configs():
    names = {str(p.relative_to(CONFIGS)) for p in RUNNABLE}
    for required in (
        "gpt/nano.yaml",
        "gpt/tiny.yaml",
        "gpt/small.yaml",
        "vit/tiny.yaml",
        "vit/small.yaml",
        "resnet/resnet20.yaml",
        "resnet/resnet18.yaml",
    ):
        assert required in names


@pytest.fixture(scope="module")
def datafiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {
        "FashionMNISTDataModule": ["--data.root", str(fakedata.write_idx_dir(root / "fmnist"))],
        "MNISTDataModule": ["--data.root", str(fakedata.write_idx_dir(root / "mnist"))],
        "CIFAR10DataModule": ["--data.root", str(fakedata.write_cifar_dir(root / "cifar"))],
        "TextFilesDataModule": ["--data.paths", str(fakedata.write_text_dir(root / "text"))],
    }


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_runs_one_step(path, datafiles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = yaml.safe_load(path.read_text())
    model_args = cfg["model"]["init_args"]
    data_cls = cfg["data"]["class_path"].rsplit(".", 1)[-1]
    args = [
        "fit",
        "--config",
        str(path),
        "--trainer.max_steps",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.val_check_interval",
        "1",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.log_every_n_steps",
        "1",
        "--diagnostics.every_n_steps",
        "1",
    ]
    if model_args["model"] in BIG:
        args += ["--model.model_kwargs", json.dumps({**(model_args.get("model_kwargs") or {}), "depth": 1})]
    if "block_size" in cfg["data"]["init_args"]:
        args += ["--data.block_size", "32", "--data.batch_size", "2", "--model.sample_tokens", "4"]
    args += datafiles.get(data_cls, [])
    assert train.main(args) == 0

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(cfg["trainer"]["logger"]["init_args"]["experiment_name"])
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["preset"] == model_args["model"]
    assert run.data.tags["norm"] == model_args["norm"]
    assert "train/loss" in run.data.metrics and "val/loss" in run.data.metrics
    assert any(a.path == "config.yaml" for a in client.list_artifacts(run.info.run_id))


EMBEDDED_DATA = {"PydocTextDataModule", "DigitsDataModule"}


@pytest.mark.parametrize(
    "path",
    [p for p in RUNNABLE if yaml.safe_load(p.read_text())["data"]["class_path"].rsplit(".", 1)[-1] in EMBEDDED_DATA],
    ids=lambda p: str(p.relative_to(CONFIGS)),
)
def test_shipped_validation_interval_fits_the_data(path):
    """The one-step test above overrides val_check_interval; as shipped, an integer interval longer than one epoch
    of the config's own (embedded) data is refused at fit time unless validation counts steps across epochs."""
    cfg = yaml.safe_load(path.read_text())
    trainer = cfg["trainer"]
    interval = trainer.get("val_check_interval")
    if not isinstance(interval, int) or trainer.get("check_val_every_n_epoch", 1) is None:
        return
    dm = getattr(data_modules, cfg["data"]["class_path"].rsplit(".", 1)[-1])(**cfg["data"].get("init_args", {}))
    dm.setup("fit")
    assert interval <= len(dm.train_dataloader()), f"{path.name}: val_check_interval {interval} > one epoch"
