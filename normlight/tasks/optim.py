"""Optimizer and learning-rate schedule building: AdamW or SGD, linear warmup then cosine decay (per step).

Weight decay applies by default only to matrices and conv kernels (ndim >= 2): biases, norm gains/biases and
every other 1-D or scalar parameter (DyT's alpha, ReZero's gate) are excluded, as in GPT-2/nanoGPT and timm.
"""

from __future__ import annotations

import math

import torch

from normlight.errors import NormlightError


class OptimizerConfigError(NormlightError):
    """An optimizer or schedule setting that cannot work (unknown optimizer name, negative rate, ...)."""


def _norm_param_ids(model: torch.nn.Module) -> set[int]:
    """Ids of parameters owned directly by norm modules (torch norm classes and batch-statistic plugins).

    Norm gains are usually 1-D and excluded anyway; this also catches a plugin with >= 2-D norm parameters.
    """
    norm_types = (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.RMSNorm)
    ids = set()
    for m in model.modules():
        if isinstance(m, norm_types) or getattr(m, "uses_batch_statistics", False) or getattr(m, "is_norm", False):
            ids.update(id(p) for p in m.parameters(recurse=False))
    return ids


def param_groups(model: torch.nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict]:
    """Two parameter groups: decayed (ndim >= 2, not in a norm) and not decayed (the rest).

    With ``decay_norm_and_bias=True`` every trainable parameter is decayed.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    norm_ids = _norm_param_ids(model)
    decay = [p for p in params if p.ndim >= 2 and id(p) not in norm_ids]
    decay_ids = {id(p) for p in decay}
    no_decay = [p for p in params if id(p) not in decay_ids]
    return [
        g
        for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
        if g["params"]
    ]


def check_settings(name: str, lr: float, warmup_steps: int | None, min_lr_ratio: float) -> None:
    """Raise :class:`OptimizerConfigError` for settings :func:`build_optimizer` / :func:`build_scheduler` would
    reject, so the task can refuse them when it is built (before any run or step exists)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0 or not math.isfinite(lr):
        raise OptimizerConfigError(f"model.lr must be a positive number, got {lr}")
    if name.lower() not in ("adamw", "sgd"):
        raise OptimizerConfigError(f"unknown optimizer {name!r}; model.optimizer must be 'adamw' or 'sgd'")
    if warmup_steps is not None and warmup_steps < 0:
        raise OptimizerConfigError(f"model.warmup_steps must be >= 0, got {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise OptimizerConfigError(f"model.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")


def build_optimizer(
    name: str,
    groups: list[dict],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """``adamw`` (betas, eps) or ``sgd`` (momentum, nesterov) over prepared parameter groups."""
    if lr <= 0 or not math.isfinite(lr):
        raise OptimizerConfigError(f"model.lr must be a positive number, got {lr}")
    key = name.lower()
    if key == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
    if key == "sgd":
        if nesterov and momentum <= 0:
            raise OptimizerConfigError("model.nesterov=True needs model.momentum > 0")
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    raise OptimizerConfigError(f"unknown optimizer {name!r}; model.optimizer must be 'adamw' or 'sgd'")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier at ``step``: linear from 1/(warmup+1) to 1 over ``warmup_steps``, then cosine to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following :func:`warmup_cosine`."""
    if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise OptimizerConfigError(
            f"need warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got {warmup_steps}, {min_lr_ratio}"
        )
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps, min_lr_ratio)
    )
