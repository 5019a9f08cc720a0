"""The shared LightningModule: builds a normlight model from plain serializable arguments, optimizes it.

Everything a run needs to be reproduced is a plain value (strings, numbers, dicts), so LightningCLI, the
checkpoint's hyperparameters and MLflow params all see the same thing::

    model: str preset ("gpt-tiny", "vit-small", "resnet20", "timm:resnet18")
    norm / norm_kwargs, placement / placement_kwargs, qk_norm      -> normlight.create_model(...)
    model_kwargs: dict of shape overrides (depth, dim, img_size, ...)
    optimizer ("adamw" | "sgd"), lr, weight_decay, warmup_steps, min_lr_ratio, agc_clipping, ...

A placement may recommend hyperparameters (``recommended_defaults``, e.g. nGPT: no weight decay, no warmup);
they fill in whatever the user left unset (None) and are recorded in ``self.applied_defaults`` and as an
MLflow tag. Its ``after_optimizer_step(model)`` hook runs after every optimizer step.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from lightning.pytorch import LightningModule

from normlight import __version__, registry
from normlight.distributed import fsdp2_shard
from normlight.errors import NormlightError
from normlight.models.factory import create_model
from normlight.tasks import optim
from normlight.tasks.agc import adaptive_grad_clip_
from normlight.tracking import mlflow_utils

# Hyperparameters a placement may recommend, with the value used when neither user nor placement sets one.
DEFAULTS = {"weight_decay": None, "warmup_steps": None}


class DataMismatchError(NormlightError):
    """The data and the model disagree on a shape (classes, image size, channels, vocabulary, context)."""


def format_lr(lr: float) -> str:
    """Compact learning rate for run names: 3e-4, 1e-1, 2.5e-3."""
    mant, exp = f"{lr:.2e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


class NormTask(LightningModule):
    """Base task: model construction, optimizer + warmup/cosine schedule, placement hooks, run metadata.

    Args:
        model: preset name (``normlight.list_models()``) or ``timm:<name>``.
        norm: norm plugin name for every norm site; None = the model family's default.
        norm_kwargs: options of the norm plugin (e.g. ``{"eps": 1e-6}``).
        placement: placement plugin name (transformers only); None = the family default (``pre``).
        placement_kwargs: options of the placement.
        qk_norm: norm applied to queries and keys (transformers only); None = no qk-norm.
        model_kwargs: further model arguments (depth, dim, num_heads, img_size, ...).
        optimizer: ``adamw`` or ``sgd``.
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) / L2 (SGD) weight decay; None = placement recommendation, else
            0.1 for AdamW and 5e-4 for SGD.
        betas, eps: AdamW moments and epsilon.
        momentum, nesterov: SGD momentum.
        warmup_steps: linear warmup length; None = placement recommendation, else 5% of the run.
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio`` at the last step.
        decay_norm_and_bias: also decay norm parameters, biases and other 1-D parameters.
        agc_clipping: adaptive gradient clipping factor (NFNets, unit-wise); None = off. Ordinary clipping is
            the Trainer's ``gradient_clip_val``.
    """

    def __init__(
        self,
        model: str,
        norm: str | None = None,
        norm_kwargs: dict | None = None,
        placement: str | None = None,
        placement_kwargs: dict | None = None,
        qk_norm: str | None = None,
        model_kwargs: dict | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float | None = None,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        momentum: float = 0.9,
        nesterov: bool = False,
        warmup_steps: int | None = None,
        min_lr_ratio: float = 0.1,
        decay_norm_and_bias: bool = False,
        agc_clipping: float | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        optim.check_settings(optimizer, lr, warmup_steps, min_lr_ratio)  # refused before any run exists
        spec = dict(model_kwargs or {})
        for key, value in (
            ("norm", norm),
            ("norm_kwargs", norm_kwargs),
            ("placement", placement),
            ("placement_kwargs", placement_kwargs),
            ("qk_norm", qk_norm),
        ):
            if value is not None:
                spec[key] = value
        self.model = create_model(model, **spec)
        self.placement_cls = getattr(self.model, "placement_cls", None)
        recommended = dict(getattr(self.placement_cls, "recommended_defaults", None) or {})
        chosen = {"weight_decay": weight_decay, "warmup_steps": warmup_steps}
        self.applied_defaults = {k: v for k, v in recommended.items() if k in chosen and chosen[k] is None}
        self.weight_decay = self.applied_defaults.get("weight_decay", weight_decay)
        if self.weight_decay is None:
            self.weight_decay = 0.1 if optimizer.lower() == "adamw" else 5e-4
        self.warmup_steps = self.applied_defaults.get("warmup_steps", warmup_steps)
        if self.applied_defaults:
            print(
                f"normlight: placement {getattr(self.placement_cls, '__name__', '?')} recommends "
                f"{self.applied_defaults}; applied because these were not set explicitly"
            )

    # ------------------------------------------------------------------ data agreement and run metadata
    def check_data(self, datamodule: Any) -> None:
        """Raise :class:`DataMismatchError` if ``datamodule`` cannot feed this model (subclasses check shapes)."""

    @staticmethod
    def _mismatch(what: str, data_value: Any, model_value: Any, fix: str) -> DataMismatchError:
        return DataMismatchError(
            f"data and model disagree on {what}: the data gives {data_value}, the model expects {model_value}. {fix}"
        )

    def run_tags(self) -> dict[str, str]:
        """Tags describing the run: model family and preset, norm, placement, qk-norm, plugin provenance."""
        spec = getattr(self.model, "spec", {}) or {}
        hp = self.hparams
        tags = {
            "family": str(getattr(self.model, "family", "?")),
            "preset": hp.model,
            "norm": str(spec.get("norm", hp.norm)),
            "placement": str(spec.get("placement", hp.placement)) if self.placement_cls is not None else "n/a",
            "qk_norm": str(spec.get("qk_norm", hp.qk_norm)),
            "optimizer": hp.optimizer,
            "num_params": str(sum(p.numel() for p in self.model.parameters())),
            "normlight_version": __version__,
        }
        for kind, key in (("norms", "norm"), ("placements", "placement"), ("norms", "qk_norm")):
            name = tags[key]
            if name in ("None", "n/a", "?"):
                continue
            try:
                entry = registry.lookup(kind, name)
            except NormlightError:
                continue  # a class or callable given directly: no distribution to record
            tags[f"{key}_dist"], tags[f"{key}_version"] = entry.dist, entry.version
        commit = mlflow_utils.git_commit()
        if commit:
            tags["git_commit"] = commit
        if self.applied_defaults:
            tags["recommended_defaults_applied"] = ",".join(f"{k}={v}" for k, v in self.applied_defaults.items())
        return tags

    def run_name(self) -> str:
        """A readable run name: ``<preset>/<placement>/<norm>/lr<lr>/s<seed>`` (no placement for ResNet/timm)."""
        tags = self.run_tags()
        parts = [self.hparams.model]
        if self.placement_cls is not None:
            parts.append(tags["placement"])
        parts.append(tags["norm"])
        if tags["qk_norm"] not in ("None", ""):
            parts.append(f"qk-{tags['qk_norm']}")
        parts += [f"lr{format_lr(self.hparams.lr)}", f"s{os.environ.get('PL_GLOBAL_SEED', 'x')}"]
        return "/".join(parts)

    def setup(self, stage: str) -> None:
        """Check the data against the model, then name and tag the MLflow run (rank 0; no-op without MLflow)."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None:
            self.check_data(dm)
        mlflow_utils.set_default_run_name(self.trainer, self.run_name())
        mlflow_utils.set_tags(self.trainer, self.run_tags())

    def configure_model(self) -> None:
        """Shard the model with FSDP2 when the strategy provides a device mesh (ModelParallelStrategy)."""
        if getattr(self, "device_mesh", None) is not None:
            fsdp2_shard(self.model, self.device_mesh)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the MLflow run id so that resuming from this checkpoint continues the same run."""
        checkpoint["normlight"] = {"mlflow_run_id": mlflow_utils.get_run_id(self.trainer), "version": __version__}

    # ------------------------------------------------------------------ optimization
    def log_train_loss(self, loss: torch.Tensor) -> None:
        """``train/loss`` and ``lr`` every step."""
        # sync_dist: under data parallelism train/loss is the global-batch loss (mean over ranks), not rank 0's share
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, sync_dist=True)
        if self.trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)

    def configure_optimizers(self):
        """Optimizer over (decay, no-decay) groups plus a per-step warmup + cosine schedule."""
        hp = self.hparams
        groups = optim.param_groups(self.model, self.weight_decay, hp.decay_norm_and_bias)
        opt = optim.build_optimizer(
            hp.optimizer, groups, hp.lr, betas=hp.betas, eps=hp.eps, momentum=hp.momentum, nesterov=hp.nesterov
        )
        total = self.trainer.estimated_stepping_batches if self.trainer is not None else math.inf
        total = int(total) if math.isfinite(total) else 10**9
        warmup = self.warmup_steps if self.warmup_steps is not None else int(0.05 * total) if total < 10**9 else 0
        sched = optim.build_scheduler(opt, warmup, total, hp.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def on_before_optimizer_step(self, optimizer) -> None:
        """Adaptive gradient clipping, when enabled (after any callbacks have read the raw gradients)."""
        if self.hparams.agc_clipping:
            adaptive_grad_clip_(self.model, clipping=self.hparams.agc_clipping)

    def optimizer_step(self, *args, **kwargs) -> None:
        """The ordinary step, then the placement's ``after_optimizer_step`` hook (e.g. nGPT re-normalization)."""
        super().optimizer_step(*args, **kwargs)
        hook = getattr(self.placement_cls, "after_optimizer_step", None)
        if hook is not None:
            hook(self.model)
