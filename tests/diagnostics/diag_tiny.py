"""Small hand-written models that follow the documented block interface (model.blocks, block.attn
with record_attention / last_attn_probs / last_max_logit / causal), so the diagnostics can be tested
without depending on the real model zoo."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import nn


class TinyAttn(nn.Module):
    def __init__(self, dim, heads=2, causal=True):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.record_attention = False
        self.last_attn_probs = None
        self.last_max_logit = None

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if self.record_attention:
            logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            if self.causal:
                logits = logits.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
            probs = logits.softmax(-1)
            self.last_attn_probs = probs.detach()
            self.last_max_logit = logits.detach().max()
            y = probs @ v
        else:
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class TinyBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), TinyAttn(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    family = "gpt"

    def __init__(self, vocab=32, dim=16, depth=3, seq=12):
        super().__init__()
        self.vocab_size, self.max_seq_len = vocab, seq
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(TinyBlock(dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, idx):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


class LMTask(pl.LightningModule):
    """Next-token LM on random tokens; ``nan_at_step`` injects a NaN loss at that global step."""

    def __init__(self, nan_at_step=None, lr=1e-2, **model_kwargs):
        super().__init__()
        self.model = TinyLM(**model_kwargs)
        self.nan_at_step = nan_at_step

    def _loss(self, batch):
        (idx,) = batch
        logits = self.model(idx[:, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        if self.nan_at_step is not None and self.global_step >= self.nan_at_step:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


def token_loader(n=64, seq=12, vocab=32, batch_size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, vocab, (n, seq + 1), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=batch_size)


def trainer(tmp_path, callbacks, max_steps=10, **kw):
    kw.setdefault("limit_val_batches", 2)
    kw.setdefault("val_check_interval", 5)
    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        **kw,
    )
