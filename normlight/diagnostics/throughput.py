"""Throughput (tokens or images per second, summed over ranks) and peak memory (catalog D23)."""

from __future__ import annotations

import resource
import sys
import time

import torch


def batch_inputs(batch):
    """The model input of a batch: the first element of a tuple/list, ``batch['input']``-like dict values, or the batch."""
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    if isinstance(batch, dict) and batch:
        for key in ("input", "inputs", "idx", "x", "images", "image"):
            if key in batch:
                return batch[key]
        return next(iter(batch.values()))
    return batch


def count_items(batch) -> tuple[int, str]:
    """(count, unit): token ids count as tokens (every element), float inputs count as images (dim 0)."""
    x = batch_inputs(batch)
    if not isinstance(x, torch.Tensor):
        return 0, "samples"
    if not x.is_floating_point():
        return x.numel(), "tokens"
    return x.shape[0], "images"


def peak_memory_mb(device: torch.device) -> float:
    """CUDA max allocated on ``device`` or, on CPU, the process's peak resident set size, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class ThroughputMeter:
    """Counts items between two reads and divides by the wall time in between."""

    def __init__(self):
        self.items = 0
        self.unit = "samples"
        self.t0 = time.perf_counter()
        self.total_items = 0
        self.total_time = 0.0

    def add(self, batch) -> None:
        """Count the items of one training batch."""
        n, self.unit = count_items(batch)
        self.items += n

    def read(self) -> tuple[int, float]:
        """(items, seconds) since the last read; restarts the interval."""
        now = time.perf_counter()
        items, dt = self.items, now - self.t0
        self.total_items += items
        self.total_time += dt
        self.items, self.t0 = 0, now
        return items, dt
