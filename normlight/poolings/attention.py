"""Attention poolings: a learned query (Hopfield pooling), per-channel attention (AttSets), and a learned
cross-attention over the hidden states of every layer (Multi-Layers Trainable Pooling).

Projections use PyTorch's default Linear init and learned queries ``N(0, 0.02)`` truncated at 2 std; the
models' GPT-2 init does not touch pooling parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normlight.poolings.base import Pooling


def _heads(dim: int, heads: int | None, num_heads: int | None) -> int:
    h = int(heads or num_heads or 1)
    if dim % h:
        raise ValueError(f"{h} heads do not divide dim={dim}")
    return h


class AttentionPool(Pooling):
    """One attention step with a learned query (Hopfield pooling, Ramsauer et al. 2021; timm's ``map`` head).

    Per head h: ``y_h = softmax(q_h K_h^T / sqrt(d_h)) V_h`` with ``K, V = x W_k, x W_v`` and the learned state
    pattern ``q`` (beta = 1/sqrt(d_h), the attention scale); ``y = concat_h(y_h) W_o``. Heads default to the
    model's ``num_heads``. The final norm runs per token first (timm's ``map`` pool has no ``fc_norm``).

    ::

        x_1 .. x_T ── final norm ── W_k, W_v ──┐
                            learned query q ───┴── softmax(q k^T / sqrt(d_h)) v ── W_o ──> y
    """

    description = "learned-query attention pooling (Hopfield pooling): softmax(q K^T/sqrt(d)) V"
    paper = "Ramsauer et al. 2021, Hopfield Networks is All You Need"

    def __init__(
        self,
        dim: int,
        heads: int | None = None,
        bias: bool = True,
        num_heads: int | None = None,
        norm_position: str | None = None,
    ):
        super().__init__(dim, norm_position=norm_position)
        self.heads = _heads(dim, heads, num_heads)
        self.query = nn.Parameter(torch.empty(dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.kv = nn.Linear(dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D)."""
        b, t, d = x.shape
        k, v = self.kv(x).view(b, t, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q = self.query.to(x.dtype).view(1, self.heads, 1, d // self.heads).expand(b, -1, -1, -1)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, 1, d_h)
        return self.proj(y.reshape(b, d))


class ChannelwiseAttentionPool(Pooling):
    """AttSets (Yang et al. 2020): per-token, per-channel scores from one linear layer, softmax over the tokens
    separately for every channel, weighted sum: ``y_c = sum_t softmax_t(x W + b)_{t,c} x_{t,c}``.

    Permutation invariant, costs one D x D linear layer; softmax in at least float32. Final norm per token first.

    ::

        x_1 .. x_T ── final norm ──┬── Linear ── softmax over t (per channel) ──┐
                                   └────────────────────────────────────────── (x) ── sum over t ──> y
    """

    description = "AttSets: per-channel softmax over tokens of a linear score, weighted sum"
    paper = "Yang et al. 2020, Robust Attentional Aggregation of Deep Feature Sets for Multi-view 3D Reconstruction"

    def __init__(self, dim: int, bias: bool = True, norm_position: str | None = None):
        super().__init__(dim, norm_position=norm_position)
        self.score = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D)."""
        a = self.score(x).to(torch.promote_types(x.dtype, torch.float32)).softmax(dim=1).to(x.dtype)
        return (a * x).sum(dim=1)


class MultiLayerAttentionPool(Pooling):
    """Multi-Layers Trainable Pooling (Tang & Yang 2024): learned queries cross-attend to the tokens of EVERY
    layer's output, each tagged with a learned layer embedding; the query outputs are averaged.

    ``K, V = (h_l + e_l) W_k, (h_l + e_l) W_v`` over all layers l and tokens t; per head
    ``o_j = softmax(q_j K^T / sqrt(d_h)) V`` for ``num_queries`` learned queries; ``y = mean_j(o_j) W_o``.
    The hidden states are the raw block outputs, so the model's final norm runs AFTER pooling (declared
    ``norm_position = "post"``). The number of queries is not in our references (default 4).

    ::

        h_1 + e_1, .., h_L + e_L ── W_k, W_v ──┐
                         queries q_1..q_Q ─────┴── softmax(q k^T / sqrt(d_h)) v ── mean over q ── W_o ── final norm ──> y
    """

    description = "cross-attention of learned queries over the tokens of all layers (+ layer embedding)"
    paper = "Tang & Yang 2024, Pooling And Attention: What Are Effective Designs For LLM-Based Embedding Models?"
    norm_position = "post"
    needs_hidden_states = True

    def __init__(
        self,
        dim: int,
        num_layers: int,
        heads: int | None = None,
        num_queries: int = 4,
        bias: bool = True,
        num_heads: int | None = None,
        norm_position: str | None = None,
    ):
        super().__init__(dim, norm_position=norm_position)
        if num_layers < 1 or num_queries < 1:
            raise ValueError(
                f"multi_layer_attn needs num_layers >= 1 and num_queries >= 1, got {num_layers}, {num_queries}"
            )
        self.heads, self.num_layers = _heads(dim, heads, num_heads), int(num_layers)
        self.queries = nn.Parameter(torch.empty(num_queries, dim))
        self.layer_emb = nn.Parameter(torch.empty(num_layers, dim))
        nn.init.trunc_normal_(self.queries, std=0.02)
        nn.init.trunc_normal_(self.layer_emb, std=0.02)
        self.kv = nn.Linear(dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, T, D) plus the L block outputs (each (B, T, D)) -> (B, D)."""
        if not hidden_states or len(hidden_states) != self.num_layers:
            got = len(hidden_states or [])
            raise ValueError(f"multi_layer_attn was built for {self.num_layers} layers but got {got} hidden states")
        h = torch.stack(hidden_states, dim=1) + self.layer_emb.to(x.dtype)[None, :, None, :]  # (B, L, T, D)
        b, d, hd = x.shape[0], x.shape[-1], x.shape[-1] // self.heads
        k, v = self.kv(h.flatten(1, 2)).view(b, -1, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        q = self.queries.to(x.dtype).view(-1, self.heads, hd).transpose(0, 1).expand(b, -1, -1, -1)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, Q, d_h)
        return self.proj(y.transpose(1, 2).reshape(b, -1, d).mean(dim=1))
