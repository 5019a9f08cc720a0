"""ResFormer value residual (Zhou et al. 2025, Value Residual Learning): later layers attend over a mix of
their own values and the FIRST layer's values.

``U_n = A_n (lambda_1 V_n + lambda_2 V_1)`` for n > 1 (layer 1 unchanged), with lambda_1 = lambda_2 = 0.5 in
the paper's ResFormer; ``learnable=True`` makes both lambdas trainable per layer (the paper's learnable
variant). The hidden-state residuals stay plain. Acts inside attention (site ``value``), so it needs the
``attention`` mixer.
"""

from __future__ import annotations

import torch
from torch import nn

from normlight.residuals.base import Residual


class _FirstValues:
    """Holds the first layer's values of the current forward pass, shared by one model's modules (not state)."""

    v: torch.Tensor | None = None


class ValueResidual(Residual):
    """Values of layer n > 1 become ``lambda_1 V_n + lambda_2 V_1``; layer 1 records V_1.

    ::

        layer 1:  x ── W_v ── V_1 ──────────────────────────────────── softmax(QK^T) V_1
                               └──────────────────────┐ (kept)
        layer n:  x ── W_v ── V_n ── (x lambda_1) ──(+)── (x lambda_2) V_1 ── softmax(QK^T) (...)
    """

    description = "ResFormer: attention values of every later layer mixed with the first layer's values"
    paper = "Zhou et al. 2025, Value Residual Learning"
    sites = ("value",)

    def __init__(
        self,
        dim: int | None = None,
        layer_idx: int = 0,
        num_layers: int = 1,
        lambdas: tuple[float, float] = (0.5, 0.5),
        learnable: bool = False,
    ):
        super().__init__(dim)
        if len(lambdas) != 2:
            raise ValueError(f"value_residual lambdas must be two numbers (own, first layer), got {lambdas!r}")
        self.layer_idx, self.num_layers = int(layer_idx), int(num_layers)
        lam = torch.tensor([float(v) for v in lambdas])
        if learnable and self.layer_idx > 0:
            self.lambdas = nn.Parameter(lam)
        else:
            self.register_buffer("lambdas", lam, persistent=False)
        self.first: _FirstValues | None = None

    @classmethod
    def link_layers(cls, modules: list["ValueResidual"]) -> None:
        """Give the modules of one model (in depth order) one shared holder of the first layer's values."""
        shared = _FirstValues()
        for m in modules:
            m.first = shared

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """v of layer 1 is kept (and returned); later layers return the lambda-mix with it."""
        if self.first is None:
            raise RuntimeError(
                "value_residual modules are not linked: build them through a normlight model "
                "(or call ValueResidual.link_layers(modules_in_depth_order))"
            )
        if self.layer_idx == 0:
            if self.num_layers > 1:
                self.first.v = v
            return v
        if self.first.v is None or self.first.v.shape != v.shape:
            raise RuntimeError("value_residual: the first layer's values of this forward pass are missing")
        lam = self.lambdas.to(v.dtype)
        out = lam[0] * v + lam[1] * self.first.v
        if self.layer_idx == self.num_layers - 1:
            self.first.v = None  # the pass is over: keep no graph alive (and keep the model deep-copyable)
        return out

    def diagnostics(self) -> dict[str, float]:
        """lambda_1 (own values) and lambda_2 (first layer's) of a learnable layer."""
        if not isinstance(self.lambdas, nn.Parameter):
            return {}
        own, first = self.lambdas.detach().tolist()
        return {"lambda_own": own, "lambda_first": first}

    def extra_repr(self) -> str:
        return f"layer_idx={self.layer_idx}, lambdas={self.lambdas.tolist()}"
