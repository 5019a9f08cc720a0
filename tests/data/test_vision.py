"""Vision DataModules: IDX / CIFAR-10 / ImageFolder readers, digits, clear errors for missing data."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from normlight.data import (
    CIFAR10DataModule,
    DataError,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    TextFilesDataModule,
)
from normlight.data.vision import read_idx
from tests.data import fakedata

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


class _Payload:
    """Unpickling this runs code (writes the file it names)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('code ran')",))


def test_cifar_reader_refuses_a_crafted_batch_without_running_it(tmp_path):
    d = fakedata.write_cifar_dir(tmp_path, per_batch=4)
    marker = tmp_path / "pwned"
    with open(d / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Payload(marker), b"labels": [0]}, f)
    with pytest.raises(DataError, match=r"data_batch_3 .*builtins\.exec, which a CIFAR-10 batch never contains"):
        CIFAR10DataModule(root=str(tmp_path)).setup()
    assert not marker.exists()
    with open(d / "data_batch_3", "wb") as f:  # a pickle of the right kind but not a CIFAR batch
        pickle.dump({b"data": np.zeros((2, 10), dtype=np.float32), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"data_batch_3 .*not an \(N, 3072\) uint8 array"):
        CIFAR10DataModule(root=str(tmp_path)).setup()
