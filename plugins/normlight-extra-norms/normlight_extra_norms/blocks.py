"""A placement that is not in normlight's core: the parallel attention + MLP block (GPT-J / PaLM).

Written against normlight's placement contract: a subclass of ``normlight.blocks.base.Block`` that
overrides only how its norms are built and ``forward``.
"""

from __future__ import annotations

from normlight.blocks.base import Block


class ParallelBlock(Block):
    """Parallel block (GPT-J 2021, PaLM 2022): attention and MLP read ONE shared pre-norm of the same input.

    ``out = x + attn(N(x)) + mlp(N(x))``: one norm per block instead of two, and both sublayers can run
    at once (PaLM reports ~15% faster training at large scale). The model keeps its final norm.

    ::

        x ──┬──────────────────────────────(+)──> out
            └─ norm1 ──┬── attn ───────────(+)
                       └── mlp ────────────┘
    """

    def build_norms(self) -> None:
        """A single shared input norm (site "attn_in": it feeds attention, and the MLP reads the same value)."""
        self.norm1 = self.make_norm("attn_in")

    def forward(self, x, pos=None):
        """x + attn(N(x)) + mlp(N(x)) with N evaluated once; both joins go through the residual hooks, so any
        normlight residual plugin (gate, laurel, ...) composes with this placement."""
        h = self.norm1(x)
        return self.mlp_residual(self.attn_residual(x, self.attn(h, pos)), self.mlp(h))
