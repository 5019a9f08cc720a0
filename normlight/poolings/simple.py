"""Parameter-free poolings: class token, mean, max, last token and position-weighted mean.

Where the final norm sits follows timm for the vision readouts (``VisionTransformer``: ``fc_norm`` is used
exactly when ``global_pool`` is ``avg``/``max``): ``cls`` normalizes every token first, ``mean`` and ``max``
normalize the pooled vector. The sequence readouts (``last_token``, ``weighted_mean``) read the final-normed
hidden states, as an LM's last hidden state is read for embeddings.
"""

from __future__ import annotations

import torch

from normlight.poolings.base import Pooling


class ClsPool(Pooling):
    """The class token: ``y = x[:, 0]`` (Dosovitskiy et al. 2021). The model prepends the token; final norm before.

    ::

        [cls] x_1 .. x_N ── final norm (per token) ── take [cls] ──> y
    """

    description = "class token readout: y = x[:, 0] (final norm before, as timm's cls)"
    paper = "Dosovitskiy et al. 2021, An Image is Worth 16x16 Words"
    uses_class_token = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1+N, D) -> (B, D)."""
        return x[:, 0]


class MeanPool(Pooling):
    """Mean over tokens: ``y = (1/T) sum_t x_t``; final norm AFTER pooling (timm's ``avg`` pool with ``fc_norm``).

    ::

        x_1 .. x_T ── mean over t ── final norm ──> y
    """

    description = "mean over tokens (final norm after pooling, as timm's avg + fc_norm)"
    paper = "Lin et al. 2014, Network In Network (global average pooling)"
    norm_position = "post"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D)."""
        return x.mean(dim=1)


class MaxPool(Pooling):
    """Max over tokens per channel: ``y_c = max_t x_{t,c}``; final norm after pooling (timm's ``max`` pool)."""

    description = "max over tokens per channel (final norm after pooling, as timm's max + fc_norm)"
    paper = "Boureau et al. 2010, A Theoretical Analysis of Feature Pooling in Visual Recognition"
    norm_position = "post"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D)."""
        return x.amax(dim=1)


class LastTokenPool(Pooling):
    """The last position (the EOS / last-token readout of a causal LM, which alone has seen the whole sequence)."""

    description = "last token: y = x[:, -1] (the causal LM's EOS readout)"
    paper = "Tang & Yang 2024, Pooling And Attention: What Are Effective Designs For LLM-Based Embedding Models?"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D)."""
        return x[:, -1]


class WeightedMeanPool(Pooling):
    """Position-weighted mean (SGPT): ``y = sum_t w_t x_t`` with ``w_t = t / sum_s s``, t = 1..T.

    Later positions of a causal LM have seen more of the sequence, so they weigh more (Muennighoff 2022,
    SGPT; the RDS+ data-selection readout). Weights in at least float32.
    """

    description = "position-weighted mean, w_t proportional to t (SGPT)"
    paper = "Muennighoff 2022, SGPT: GPT Sentence Embeddings for Semantic Search"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D)."""
        t = x.shape[1]
        w = torch.arange(1, t + 1, device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
        w = (w / w.sum()).to(x.dtype)
        return torch.einsum("t,btd->bd", w, x)
