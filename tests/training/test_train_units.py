"""Units of the training stack: data readers and splits, optimizer groups, the schedule, placement hooks."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

sys.path.insert(0, str(Path(__file__).parent))
import fakedata  # noqa: E402

from normlight.blocks.placements.standard import PreNormBlock  # noqa: E402
from normlight.data import (  # noqa: E402
    CIFAR10DataModule, DataError, DigitsDataModule, FashionMNISTDataModule, ImageFolderDataModule, MNISTDataModule,
    PydocTextDataModule, TextFilesDataModule,
)
from normlight.data.common import split_indices  # noqa: E402
from normlight.data.vision import read_idx  # noqa: E402
from normlight.tasks import CausalLanguageModeling, ImageClassification  # noqa: E402
from normlight.tasks.optim import OptimizerConfigError, build_optimizer, param_groups, warmup_cosine  # noqa: E402
from normlight.tracking import mlflow_utils  # noqa: E402


# ---------------------------------------------------------------- data
def test_idx_roundtrip_and_malformed(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = fakedata.write_idx(tmp_path / "x-idx3-ubyte", arr, compress=False)
    assert np.array_equal(read_idx(p).numpy(), arr)
    pz = fakedata.write_idx(tmp_path / "y-idx3-ubyte", arr, compress=True)
    assert np.array_equal(read_idx(pz).numpy(), arr)
    p.write_bytes(p.read_bytes()[:-5])  # truncated body
    with pytest.raises(DataError, match=str(p)):
        read_idx(p)


def test_mnist_idx_module(tmp_path):
    root = fakedata.write_idx_dir(tmp_path / "m", n_train=60, n_test=20)
    dm = MNISTDataModule(root=str(root), img_size=32, in_chans=3, val_fraction=0.25)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (45, 15, 20)
    x, y = dm.train_set[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= int(y) < 10
    raw = read_idx(root / "t10k-images-idx3-ubyte.gz")
    dm28 = MNISTDataModule(root=str(root), img_size=28)
    dm28.setup()
    expect = (raw[0].float() / 255 - dm28.mean) / dm28.std
    assert torch.allclose(dm28.test_set[0][0][0], expect)


def test_missing_data_paths_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"fashion.*apt-get install dataset-fashion-mnist"):
        FashionMNISTDataModule(root=str(tmp_path / "fashion")).check()
    with pytest.raises(DataError, match=str(tmp_path / "cifar") + r".*cifar-10-python.tar.gz"):
        CIFAR10DataModule(root=str(tmp_path / "cifar")).check()
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        ImageFolderDataModule(root=str(tmp_path / "nope")).check()
    with pytest.raises(DataError, match=r"nothing\*\.txt matches no file"):
        TextFilesDataModule(paths=str(tmp_path / "nothing*.txt")).check()


def test_cifar_batches_in_real_format(tmp_path):
    d = fakedata.write_cifar_dir(tmp_path, per_batch=10)
    dm = CIFAR10DataModule(root=str(tmp_path), augment=False, val_fraction=0.2)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 10, 10)
    with open(d / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    img = torch.as_tensor(raw[b"data"][3].reshape(3, 32, 32)).float() / 255  # CIFAR rows are R, G, B planes
    x, y = dm.test_set[3]
    assert torch.allclose(x, (img - dm.mean) / dm.std) and int(y) == raw[b"labels"][3]
    (d / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_2"):
        CIFAR10DataModule(root=str(tmp_path)).setup()


def test_splits_are_deterministic_and_disjoint():
    a, b = split_indices(100, 0.2, seed=3), split_indices(100, 0.2, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert len(set(a[0].tolist()) & set(a[1].tolist())) == 0 and len(a[1]) == 20
    assert not torch.equal(split_indices(100, 0.2, seed=4)[1], a[1])
    d1, d2 = DigitsDataModule(split_seed=1), DigitsDataModule(split_seed=1)
    d1.setup(), d2.setup()
    assert torch.equal(d1.val_set.labels, d2.val_set.labels)


def test_digits_and_text_shapes(tmp_path):
    dm = DigitsDataModule(img_size=16, in_chans=3, batch_size=8)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 16, 16) and y.shape == (8,)
    t = PydocTextDataModule(block_size=32, batch_size=4)
    t.setup()
    x, y = next(iter(t.val_dataloader()))
    assert x.shape == (4, 32) and torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) < 256
    files = TextFilesDataModule(paths=[str(fakedata.write_text_dir(tmp_path / "t"))], block_size=16)
    files.setup()
    assert len(files.train_set) > len(files.val_set) > 0


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path), img_size=16, val_fraction=0.2)
    assert dm.num_classes == 2
    dm.setup()
    x, y = dm.val_set[0]
    assert x.shape == (3, 16, 16) and len(dm.val_set) == 2


# ---------------------------------------------------------------- optimizer and schedule
def test_weight_decay_excludes_norms_biases_and_1d():
    task = ImageClassification(model="vit-tiny", model_kwargs={"depth": 1, "dim": 32, "num_heads": 2})
    decay, no_decay = param_groups(task.model, 0.05)
    names = {id(p): n for n, p in task.model.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all("norm" not in names[id(p)] for p in decay["params"])
    assert any(names[id(p)].endswith("bias") for p in no_decay["params"])
    assert any("norm" in names[id(p)] for p in no_decay["params"])
    (everything,) = param_groups(task.model, 0.05, decay_norm_and_bias=True)
    assert len(everything["params"]) == len(list(task.model.parameters()))


def test_warmup_cosine_matches_formula():
    warm, total, floor = 10, 110, 0.1
    assert warmup_cosine(0, warm, total, floor) == pytest.approx(1 / 11)
    assert warmup_cosine(9, warm, total, floor) == pytest.approx(10 / 11)
    assert warmup_cosine(10, warm, total, floor) == pytest.approx(1.0)
    assert warmup_cosine(60, warm, total, floor) == pytest.approx(floor + (1 - floor) * 0.5)  # half-way: cos(pi/2)=0
    assert warmup_cosine(110, warm, total, floor) == pytest.approx(floor)


def test_optimizer_choices_and_errors():
    p = [torch.nn.Parameter(torch.zeros(2, 2))]
    sgd = build_optimizer("SGD", [{"params": p}], 0.1, momentum=0.9, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert isinstance(build_optimizer("adamw", [{"params": p}], 1e-3), torch.optim.AdamW)
    with pytest.raises(OptimizerConfigError, match="'adam'"):
        build_optimizer("adam", [{"params": p}], 1e-3)
    with pytest.raises(OptimizerConfigError, match="lr"):
        build_optimizer("sgd", [{"params": p}], -1.0)


# ---------------------------------------------------------------- placement hooks and recommended defaults
class CountingBlock(PreNormBlock):
    """A pre-norm block that recommends hyperparameters and counts optimizer steps (test placement)."""

    recommended_defaults = {"weight_decay": 0.0, "warmup_steps": 0}
    calls = 0

    @staticmethod
    def after_optimizer_step(model):
        CountingBlock.calls += 1


def test_placement_hooks_and_recommended_defaults(tmp_path):
    task = CausalLanguageModeling(model="gpt-nano", placement=CountingBlock, model_kwargs={"depth": 1},
                                  sample_tokens=0, lr=1e-3)
    assert task.applied_defaults == {"weight_decay": 0.0, "warmup_steps": 0}
    assert task.weight_decay == 0.0 and task.warmup_steps == 0
    explicit = CausalLanguageModeling(model="gpt-nano", placement=CountingBlock, model_kwargs={"depth": 1},
                                      weight_decay=0.2)
    assert explicit.weight_decay == 0.2 and explicit.applied_defaults == {"warmup_steps": 0}
    CountingBlock.calls = 0
    dm = PydocTextDataModule(block_size=16, batch_size=2)
    trainer = Trainer(max_steps=3, accumulate_grad_batches=2, limit_val_batches=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path, accelerator="cpu", devices=1)
    trainer.fit(task, dm)
    assert CountingBlock.calls == 3  # once per optimizer step, not per micro-batch


def test_tracking_uri_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_utils.default_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert mlflow_utils.default_artifact_location(mlflow_utils.default_tracking_uri()) == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert mlflow_utils.default_tracking_uri() == "http://127.0.0.1:5999"
    assert mlflow_utils.default_artifact_location("http://127.0.0.1:5999") is None
    assert mlflow_utils.get_run_id(None) is None  # helpers are no-ops without a trainer / logger


def test_agc_option_clips_unit_wise_before_the_step():
    task = ImageClassification(model="resnet20", model_kwargs={"img_size": 16, "in_chans": 1}, agc_clipping=0.01)
    torch.manual_seed(0)
    for p in task.model.parameters():
        p.grad = torch.randn_like(p) * 10.0  # far above 1% of any weight norm
    task.on_before_optimizer_step(None)
    for name, p in task.model.named_parameters():
        w, g = p.detach().double(), p.grad.double()
        if p.ndim > 1:
            w_n, g_n = w.flatten(1).norm(dim=1), g.flatten(1).norm(dim=1)
        else:
            w_n, g_n = w.norm()[None], g.norm()[None]
        limit = 0.01 * torch.clamp(w_n, min=1e-3)
        assert torch.all(g_n <= limit * (1 + 1e-4)), name
    off = ImageClassification(model="resnet20", model_kwargs={"img_size": 16, "in_chans": 1})
    for p in off.model.parameters():
        p.grad = torch.ones_like(p) * 10.0
    off.on_before_optimizer_step(None)
    assert all(torch.all(p.grad == 10.0) for p in off.model.parameters())
