"""Deterministic, disjoint validation splits; embedded default data (digits, pydoc text) and text files."""

from __future__ import annotations

import torch

from normlight.data import (
    DigitsDataModule,
    PydocTextDataModule,
    TextFilesDataModule,
)
from normlight.data.common import split_indices
from tests.data import fakedata

# ---------------------------------------------------------------- data


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
