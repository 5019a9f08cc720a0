"""Item counting per batch and peak memory."""

import torch

from normlight.diagnostics import throughput

# ---------------------------------------------------------------- loss spikes


def test_item_counting_and_peak_memory():
    assert throughput.count_items((torch.zeros(4, 9, dtype=torch.long), None)) == (36, "tokens")
    assert throughput.count_items([torch.zeros(5, 3, 8, 8), torch.zeros(5)]) == (5, "images")
    assert throughput.peak_memory_mb(torch.device("cpu")) > 10
