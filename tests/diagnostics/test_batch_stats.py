"""Batch-statistics fluctuation against its formula."""

import pytest
import torch
from torch import nn

from normlight.diagnostics import batch_stats

# ---------------------------------------------------------------- loss spikes


def test_batch_stat_fluctuation_matches_formula():
    class FakeBN(nn.Module):
        uses_batch_statistics = True

    m = nn.Sequential(FakeBN(), nn.Linear(2, 2), FakeBN())
    m[0].batch_stat, m[0].running_stat = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0])
    found = batch_stats.batch_stat_modules(m)
    assert [n for n, _ in found] == ["0", "2"]
    # module 2 has not run yet: skipped
    assert batch_stats.module_fluctuations(found) == pytest.approx([(1 / (1 + 1e-5) + 0) / 2])
