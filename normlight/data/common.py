"""Shared pieces of the DataModules: the data error, deterministic splits, the loader settings."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from normlight.errors import NormlightError


class DataError(NormlightError):
    """A dataset path is missing or malformed; the message names the path and how to get the data."""


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic (train, val) split of ``range(n)``: the same seed always gives the same split."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction)))
    return perm[n_val:], perm[:n_val]


class BaseDataModule(LightningDataModule):
    """Loader plumbing shared by every normlight DataModule (subclasses fill the three datasets in ``setup``)."""

    def __init__(self, batch_size: int, num_workers: int = 0, eval_batch_size: int | None = None):
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def check(self) -> None:
        """Raise :class:`DataError` if the data this module reads is missing or malformed (cheap, no loading)."""

    def prepare_data(self) -> None:
        """Nothing to download: only check that the local files are there."""
        self.check()

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and len(ds) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (the shuffle follows the global seed set by ``seed_everything``)."""
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order (the held-out test split where the dataset has one, else validation)."""
        if self.test_set is None:
            self.setup("test")
        return self._loader(self.test_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        """Prediction runs over the test split."""
        return self.test_dataloader()
