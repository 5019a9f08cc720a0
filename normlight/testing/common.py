"""Shared pieces of the conformance kit: the error types, the context a model offers, and the closeness rule."""

from __future__ import annotations

import torch

SITES = (
    "attn_in",
    "attn_out",
    "mlp_in",
    "mlp_mid",
    "mlp_out",
    "final",
    "qk",
    "embed",
    "patch_pre",
    "patch_post",
    "pos",
    "conv",
)
NORM_CHECKS = (
    "build",
    "shape",
    "dtypes",
    "channels_first",
    "gradients",
    "state_dict",
    "copy",
    "context",
    "train_eval",
    "batch_statistics",
    "distributed",
)
PLACEMENT_CHECKS = ("block_class", "gpt", "vit")
POOLING_CHECKS = ("build", "shape", "dtypes", "gradients", "state_dict", "batch_independence", "model")
RESIDUAL_CHECKS = ("build", "shape", "gradients", "state_dict", "model")
MIXER_CHECKS = ("build", "shape", "causal", "gradients", "state_dict", "model")
DEPTH_REGULARIZER_CHECKS = ("build", "train_eval", "rates", "model")
DEFAULT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# what a model offers a mid-stack norm; a factory gets each keyword only if its signature names it
DEFAULT_CONTEXT = {"layer_idx": 1, "num_layers": 4, "site": "mlp_in"}
# max |y_low - y_fp32| allowed, relative to 1 + max |y_fp32|: a few ulps of the low-precision output
_DTYPE_TOL = {torch.float32: 1e-5, torch.float64: 1e-7, torch.bfloat16: 6e-2, torch.float16: 1e-2}


class ConformanceError(AssertionError):
    """A plugin breaks the normlight plugin contract; the message names the check and how to fix it."""


class ConformanceWarning(UserWarning):
    """A plugin keeps the contract but misses an optional part that normlight would use."""


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """max |a - b| <= tol * (1 + max |b|): relative to the output's scale, absolute near zero."""
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return False
    return a.numel() == 0 or bool((a - b).abs().max() <= tol * (1 + b.abs().max()))
