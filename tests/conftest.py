"""Suite-wide test settings: never reach a model hub or start MLflow job runners; a one-thread fixture."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


@pytest.fixture
def one_thread():
    """One intra-op thread for tests on tiny tensors: thread hand-offs (and OpenMP spin-waiting when
    processes share the 2 cores) cost far more than they save at these sizes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
