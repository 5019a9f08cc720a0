"""Helpers shared by the built-in norms: which dtype statistics are computed in."""

from __future__ import annotations

import torch

HALF_TYPES = (torch.float16, torch.bfloat16)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for float16/bfloat16 inputs (statistics in low precision lose digits), else x's own dtype."""
    return torch.float32 if x.dtype in HALF_TYPES else x.dtype


def fused_ok(x: torch.Tensor, *params: torch.Tensor | None) -> bool:
    """True if torch's fused kernel can take ``x`` and ``params`` as they are.

    torch's layer_norm / rms_norm / group_norm kernels accumulate half inputs in float32 already, but
    they need the parameters in the input's dtype (else they fall back or warn), so a bf16 input with
    float32 parameters goes through an explicit float32 upcast instead.
    """
    return all(p is None or p.dtype == x.dtype for p in params)


def cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``t.to(dtype)``, passing ``None`` through (absent affine parameters)."""
    return None if t is None else t.to(dtype)


def check_features(x: torch.Tensor, num_features: int, name: str, dim: int = -1) -> None:
    """Raise a clear error if ``x`` does not have ``num_features`` features along ``dim``."""
    if x.ndim == 0 or x.shape[dim] != num_features:
        raise ValueError(
            f"{name} was built for {num_features} features but got an input of shape "
            f"{tuple(x.shape)} (features are dim {dim}); build it with num_features={x.shape[dim] if x.ndim else '?'}"
        )


def check_layout(layout: str) -> str:
    """Validate a ``layout`` option (``channels_last``: features last; ``channels_first``: (N, C, *spatial))."""
    if layout not in ("channels_last", "channels_first"):
        raise ValueError(f"layout must be 'channels_last' or 'channels_first', got {layout!r}")
    return layout
