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


# ---------------------------------------------------------------- validation and resumable loading


def test_bad_loader_settings_and_corpora_are_refused(tmp_path):
    import pytest

    from normlight.data import DataError

    for kwargs, message in (
        ({"batch_size": 0}, "data.batch_size must be a positive integer, got 0"),
        ({"eval_batch_size": -2}, "data.eval_batch_size must be a positive integer, got -2"),
        ({"num_workers": -1}, "data.num_workers must be an integer >= 0, got -1"),
    ):
        with pytest.raises(DataError, match=message):
            DigitsDataModule(**kwargs)
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="the corpus is empty"):
        TextFilesDataModule(paths=str(tmp_path / "empty.txt")).setup()
    (tmp_path / "short.txt").write_text("x" * 100)
    with pytest.raises(DataError, match=r"100 bytes, too few .* set --data.block_size 9 or less"):
        TextFilesDataModule(paths=str(tmp_path / "short.txt"), block_size=32).setup()


def test_training_order_is_seeded_per_epoch_and_resumes_mid_epoch():
    """The state saved after k batches restores the very next batch, and the following epochs are unchanged."""

    def batches(loader, epoch):
        loader.sampler.set_epoch(epoch)
        return [y.tolist() for _, y in loader]

    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    ref = dm.train_dataloader()
    epoch0, epoch1 = batches(ref, 0), batches(ref, 1)
    assert epoch0 != epoch1 and len(epoch0) == len(epoch1) == len(ref)  # reshuffled each epoch
    assert batches(dm.train_dataloader(), 0) == epoch0  # the order is a function of (seed, epoch) only

    cut = dm.train_dataloader()
    cut.sampler.set_epoch(0)
    cut.progress = lambda: 7  # what the trainer reports: 7 batches of epoch 0 trained on
    state = cut.state_dict()
    assert state["epoch"] == 0 and state["samples"] == 7 * 64

    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    assert batches(resumed, 0) == epoch0[7:]  # continues with batch 8, not from the start
    assert batches(resumed, 1) == epoch1  # and the next epoch is whole again
