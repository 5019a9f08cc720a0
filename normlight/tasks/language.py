"""Causal language modeling: next-token cross-entropy, perplexity, and a short generated sample per validation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from normlight.data.text import decode
from normlight.tasks.base import NormTask
from normlight.tracking import mlflow_utils


class CausalLanguageModeling(NormTask):
    """Train a GPT. Logs ``train/loss``, ``lr``, ``val/loss``, ``val/ppl`` and a text sample artifact per validation.

    Args:
        model: GPT preset (``gpt-nano``, ``gpt-tiny``, ``gpt-small``, ...).
        sample_tokens: length of the text sample generated at each validation (0 = none). The prompt is the
            start of the first validation sequence; sampling uses a fixed seed, so samples are comparable.
        sample_temperature: sampling temperature (0 = greedy).
        **kwargs: everything :class:`normlight.tasks.base.NormTask` takes (norm, placement, lr, ...).
    """

    def __init__(self, model: str = "gpt-nano", sample_tokens: int = 64, sample_temperature: float = 0.8, **kwargs):
        super().__init__(model, **kwargs)
        self.sample_tokens, self.sample_temperature = sample_tokens, sample_temperature
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self._prompt: torch.Tensor | None = None

    def check_data(self, datamodule) -> None:
        """The data's vocabulary must fit the embedding and its sequence length the context."""
        m = self.model
        vocab = getattr(datamodule, "vocab_size", None)
        if vocab is not None and vocab > m.vocab_size:
            raise self._mismatch(
                "the vocabulary size",
                vocab,
                f"at most {m.vocab_size}",
                f"Set --model.model_kwargs '{{vocab_size: {vocab}}}'.",
            )
        block = getattr(datamodule, "block_size", None)
        if block is not None and block > m.max_seq_len:
            raise self._mismatch(
                "the sequence length",
                block,
                f"at most max_seq_len={m.max_seq_len}",
                f"Set --data.block_size {m.max_seq_len} or --model.model_kwargs '{{max_seq_len: {block}}}'.",
            )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V)."""
        return self.model(idx)

    def _loss(self, batch) -> tuple[torch.Tensor, int]:
        x, y = batch
        logits = self.model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1)), y.numel()

    def training_step(self, batch, batch_idx):
        """Mean next-token cross-entropy of one batch (plus the early exits' losses when the model has them)."""
        loss, _ = self._loss(batch)
        y = batch[1].reshape(-1)
        loss = self.with_early_exits(loss, lambda lg: F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), y))
        self.log_train_loss(loss)
        return loss

    def validation_step(self, batch, batch_idx):
        """Accumulate the token-weighted validation loss; keep a prompt for the sample."""
        loss, n = self._loss(batch)
        self.val_loss.update(loss, n)
        if batch_idx == 0:
            self._prompt = batch[0][0, :16].detach()

    def on_validation_epoch_end(self) -> None:
        """``val/loss`` and ``val/ppl`` over the whole split; a text sample as an MLflow artifact (rank 0)."""
        loss = self.val_loss.compute()
        self.val_loss.reset()
        # compute() already reduced over ranks; sync_dist (a mean of equal values) says so to Lightning under DDP
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/ppl", torch.exp(loss.clamp(max=50.0)), sync_dist=True)
        # every rank generates (a sharded FSDP2 model all-gathers in forward, so rank 0 alone would hang);
        # log_text writes from rank 0 only
        if (
            self.sample_tokens > 0
            and self._prompt is not None
            and not self.trainer.sanity_checking
            and math.isfinite(float(loss))
        ):
            out = self.generate(self._prompt[None], self.sample_tokens, self.sample_temperature)[0]
            text = f"[prompt]{decode(out[: len(self._prompt)])}[/prompt]{decode(out[len(self._prompt) :])}"
            mlflow_utils.log_text(self.trainer, text, f"samples/step_{self.global_step:07d}.txt")

    def test_step(self, batch, batch_idx):
        """Accumulate the token-weighted test loss."""
        loss, n = self._loss(batch)
        self.test_loss.update(loss, n)

    def on_test_epoch_end(self) -> None:
        """``test/loss`` and ``test/ppl``."""
        loss = self.test_loss.compute()
        self.test_loss.reset()
        self.log("test/loss", loss, sync_dist=True)
        self.log("test/ppl", torch.exp(loss.clamp(max=50.0)), sync_dist=True)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.8, seed: int = 0) -> torch.Tensor:
        """Extend ``idx`` (B, T) by ``max_new_tokens`` tokens (greedy if temperature is 0), cropping to the context."""
        was_training = self.model.training
        self.model.eval()
        gen = torch.Generator(device="cpu").manual_seed(seed)
        for _ in range(max_new_tokens):
            logits = self.model(idx[:, -self.model.max_seq_len :])[:, -1].float()
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits / temperature, dim=-1).cpu()
                nxt = torch.multinomial(probs, 1, generator=gen).to(idx.device)
            idx = torch.cat([idx, nxt], dim=1)
        self.model.train(was_training)
        return idx

    def predict_step(self, batch, batch_idx):
        """Greedy next token for every position."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.model(x).argmax(-1)
