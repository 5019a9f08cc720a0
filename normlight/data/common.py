"""Shared pieces of the DataModules: the data error, deterministic splits, the loader settings, and the
resumable training loader.

A resumed run sees the batches it would have seen: the training order is a seeded permutation per epoch
(``seed_everything``'s seed + epoch), and the training loader's state (epoch, samples already trained on in it)
is saved in every checkpoint by Lightning and restored on ``--ckpt_path``, so training continues with the
very next batch instead of restarting the epoch in a new order.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

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


class ResumableSampler(DistributedSampler):
    """This rank's share of a seeded permutation per epoch (``seed + epoch``), starting ``skip`` samples into the
    epoch after a resume. With one process it is a plain seeded shuffle. Lightning calls ``set_epoch``."""

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.resume_epoch, self.skip = None, 0

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``; the resume offset applies only to the epoch it was saved in."""
        super().set_epoch(epoch)
        if self.resume_epoch is not None and epoch != self.resume_epoch:
            self.resume_epoch, self.skip = None, 0

    def __iter__(self):
        indices = list(super().__iter__())
        skip = self.skip if self.resume_epoch in (None, self.epoch) else 0
        self.resume_epoch, self.skip = None, 0  # the next epoch starts at its beginning
        return iter(indices[skip:])


class ResumableLoader(DataLoader):
    """A training DataLoader whose state (epoch, samples of this epoch already trained on) Lightning stores in
    checkpoints and restores on resume. ``progress`` returns the training batches finished in the current epoch
    (the trainer's count, which excludes batches prefetched but not trained on)."""

    progress: Callable[[], int] | None = None

    def state_dict(self) -> dict:
        """Where training is in the epoch, in samples of this rank."""
        done = self.progress() if self.progress is not None else 0
        return {"epoch": self.sampler.epoch, "samples": done * self.batch_size, "seed": self.sampler.seed}

    def load_state_dict(self, state: dict) -> None:
        """Continue the saved epoch after its first ``samples`` samples (same seed, so the same order)."""
        if state.get("seed", self.sampler.seed) != self.sampler.seed:
            return  # another seed means another order: nothing to continue
        self.sampler.resume_epoch, self.sampler.skip = int(state["epoch"]), int(state["samples"])


class BaseDataModule(LightningDataModule):
    """Loader plumbing shared by every normlight DataModule (subclasses fill the three datasets in ``setup``)."""

    def __init__(self, batch_size: int, num_workers: int = 0, eval_batch_size: int | None = None):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise DataError(f"data.{name} must be a positive integer, got {value!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise DataError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
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

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_batches_per_epoch(self, world_size: int = 1) -> int:
        """Training batches each of ``world_size`` processes gets per epoch."""
        if self.train_set is None:
            self.setup("fit")
        per_rank = math.ceil(len(self.train_set) / world_size)
        return per_rank // self.batch_size if per_rank >= self.batch_size else math.ceil(per_rank / self.batch_size)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, resumable training batches: a permutation per epoch seeded by ``seed_everything``'s seed."""
        if self.train_set is None:
            self.setup("fit")
        world, rank = self._world()
        sampler = ResumableSampler(
            self.train_set, num_replicas=world, rank=rank, seed=int(os.environ.get("PL_GLOBAL_SEED", 0))
        )
        loader = ResumableLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=len(sampler) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
        trainer = self.trainer
        if trainer is not None:
            loader.progress = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return loader

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
