"""Blocks tests use tiny tensors throughout: one intra-op thread (see ``one_thread`` in tests/conftest.py)."""

import pytest


@pytest.fixture(autouse=True)
def _tiny_tensors(one_thread):
    """Apply the suite's one-thread fixture to every test in this folder."""
