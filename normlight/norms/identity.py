"""Identity: the norm-free baseline (every norm site returns its input unchanged)."""

from __future__ import annotations

import torch
from torch import nn


class Identity(nn.Module):
    """``y = x``. Accepts and ignores ``num_features`` so it fits every norm site; no parameters.

    Used for normalization-free models (e.g. with ReZero / SkipInit placements, or the norm-free GPT
    blocks of Jha & Reagen 2024).
    """

    description = "no normalization: returns its input (the norm-free baseline)"
    paper = "Jha & Reagen 2024, ReLU's Revival: On the Entropic Overload in Normalization-Free Large Language Models (norm-free baseline)"

    def __init__(self, num_features: int | None = None, device=None, dtype=None):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` unchanged."""
        return x
