"""Multi-head self-attention on ``scaled_dot_product_attention`` with optional per-head norms and RoPE.

Data flow (all optional parts are ``nn.Identity``/``None`` unless a placement or option turns them on)::

    x (B,T,D) [+ pos] --qkv--> q,k,v (B,H,T,hd) --q_norm/k_norm/v_norm (per head)--> --RoPE(q,k)-->
      [--value_residual(v)] --SDPA (causal or not)--> y (B,H,T,hd) [* head_scale] --merge--> (B,T,H*hd) --inner_norm--> out_proj --dropout--> out

The fast path stays on SDPA and stores nothing. With ``record_attention = True`` the probabilities are
computed explicitly and ``last_attn_probs`` (B,H,T,T) and ``last_max_logit`` (max pre-softmax logit)
are kept, detached, for diagnostics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (rotate-half form) over the last dim of (B,H,T,hd) tensors."""

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_seq_len), inv_freq)  # int positions x float32 -> float32
        angles = torch.cat([angles, angles], dim=1)  # (T, hd): same angle for both halves of a pair
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate feature pairs (i, i+hd/2) of every position t by angle t * base^(-2i/hd)."""
        t = x.shape[-2]
        cos, sin = self.cos[:t].to(x.dtype), self.sin[:t].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Attention(nn.Module):
    """Multi-head self-attention; ``qkv`` is one fused projection whose rows are [q; k; v]."""

    description = "multi-head self-attention (the default token mixer)"
    paper = "Vaswani et al. 2017, Attention Is All You Need"

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        causal: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        rope: bool = False,
        max_seq_len: int = 1024,
        q_norm: nn.Module | None = None,
        k_norm: nn.Module | None = None,
        v_norm: nn.Module | None = None,
        inner_norm: nn.Module | None = None,
        head_scale: bool = False,
        scale: float | None = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.causal = num_heads, dim // num_heads, causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.q_norm = q_norm or nn.Identity()
        self.k_norm = k_norm or nn.Identity()
        self.v_norm = v_norm or nn.Identity()
        self.inner_norm = inner_norm or nn.Identity()
        # NormFormer head scale, applied per head BEFORE out_proj (the paper's ordering, not fairseq's)
        self.head_scale = nn.Parameter(torch.ones(num_heads)) if head_scale else None
        self.rope = RotaryEmbedding(self.head_dim, max_seq_len) if rope else None
        self.value_residual: nn.Module | None = None  # set by a residual plugin acting on the values (ResFormer)
        self.scale = scale  # softmax scale; None = 1/sqrt(head_dim)
        self.attn_dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.record_attention = False
        self.last_attn_probs: torch.Tensor | None = None
        self.last_max_logit: torch.Tensor | None = None

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B,H,T,hd) after the per-head norms and RoPE."""
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = self.q_norm(q), self.k_norm(k), self.v_norm(v)
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(scale * q k^T [+ causal mask]) v; explicit (and recorded) when ``record_attention``."""
        p = self.attn_dropout if self.training else 0.0
        if not self.record_attention:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal, scale=self.scale)
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        logits = (q @ k.transpose(-2, -1)) * scale
        if self.causal:
            t = q.shape[-2]
            mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
            logits = logits.masked_fill(~mask, float("-inf"))
        probs = logits.float().softmax(dim=-1).to(q.dtype)
        self.last_max_logit = logits.detach().max()
        self.last_attn_probs = probs.detach()
        return F.dropout(probs, p) @ v

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Attention output (B,T,D); ``pos`` (broadcastable to x) is added to the input first (LaPE)."""
        if pos is not None:
            x = x + pos
        b, t = x.shape[:2]
        q, k, v = self.project(x)
        if self.value_residual is not None:
            v = self.value_residual(v)
        y = self.attend(q, k, v)
        if self.head_scale is not None:
            y = y * self.head_scale.view(1, -1, 1, 1).to(y.dtype)
        y = y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)
        return self.resid_dropout(self.out_proj(self.inner_norm(y)))
