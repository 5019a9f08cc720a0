"""Position-wise MLP: ``fc1 -> act [-> mid_norm] -> fc2 -> dropout`` with GELU, ReLU or SwiGLU.

``gelu`` is the exact (erf) GELU of nanoGPT, timm's ViT and BERT; ``gelu_tanh`` is the tanh approximation
``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` that GPT-2 was trained with (Hugging Face ``gelu_new``).

SwiGLU: ``fc1`` emits 2*hidden features split into (gate, up); ``h = silu(gate) * up``.
``mid_norm`` (size hidden) is the slot NormFormer and Sub-LN use after the activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "swiglu")


class MLP(nn.Module):
    """Two-layer feed-forward network of width ``hidden``."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        act: str = "gelu",
        bias: bool = True,
        dropout: float = 0.0,
        mid_norm: nn.Module | None = None,
    ):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown mlp activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.act = act
        self.fc1 = nn.Linear(dim, 2 * hidden if act == "swiglu" else hidden, bias=bias)
        self.mid_norm = mid_norm or nn.Identity()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def activate(self, h: torch.Tensor) -> torch.Tensor:
        """The nonlinearity between fc1 and fc2."""
        if self.act == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            return F.silu(gate) * up
        if self.act == "gelu_tanh":
            return F.gelu(h, approximate="tanh")
        return F.gelu(h) if self.act == "gelu" else F.relu(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """MLP output, same shape as x."""
        return self.dropout(self.fc2(self.mid_norm(self.activate(self.fc1(x)))))
