"""Tiny tensors: one intra-op thread is faster than two on a shared 2-core box (no oversubscription)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
