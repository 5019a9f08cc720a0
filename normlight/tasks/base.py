"""The shared LightningModule: builds a normlight model from plain serializable arguments, optimizes it.

Everything a run needs to be reproduced is a plain value (strings, numbers, dicts), so LightningCLI, the
checkpoint's hyperparameters and MLflow params all see the same thing::

    model: str preset ("gpt-tiny", "vit-small", "resnet20", "timm:resnet18")
    norm / norm_kwargs, placement / placement_kwargs, qk_norm      -> normlight.create_model(...)
    model_kwargs: dict of shape overrides (depth, dim, img_size, ...)
    init_from: a pretrained checkpoint ("hf:gpt2", "nanogpt:ckpt.pt", "timm:vit_small_patch16_224", ...) that
               replaces the preset: normlight.models.load_pretrained(init_from, norm..., **model_kwargs)
    optimizer ("adamw" | "sgd"), lr, weight_decay, warmup_steps, min_lr_ratio, agc_clipping, ...

A placement may recommend hyperparameters (``recommended_defaults``, e.g. nGPT: no weight decay, no warmup);
they fill in whatever the user left unset (None) and are recorded in ``self.applied_defaults`` and as an
MLflow tag. Its ``after_optimizer_step(model)`` hook runs after every optimizer step.

The training schedule reaches the norms (PowerNorm's and UN's warmups, PRepBN's blend length follow it).
The model is built in ``__init__``, before any Trainer exists. When ``fit`` starts (``setup``), the task
knows the schedule and, if a norm factory of the model names ``total_steps`` or ``warmup_steps``
(``normlight.registry.SCHEDULE_KEYS``), rebuilds the model once with them in the norms' build context, in
training forward calls (optimizer steps x gradient accumulation). The rebuild keeps the parameters and
leaves the global RNG untouched, so the run starts from the same weights and data order. That context is
stored in checkpoints and re-applied before the weights load, so resuming or reloading a checkpoint gives
the same norms. The schedule and each norm's ``resolved_options()`` are logged as MLflow params.
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
from normlight.models.pretrained import load_pretrained
from normlight.norms import fast as norm_fast
from normlight.norms.factory import norm_scope
from normlight.tasks import optim
from normlight.tasks.agc import adaptive_grad_clip_
from normlight.tracking import mlflow_utils

# Hyperparameters a placement may recommend, with the value used when neither user nor placement sets one.
DEFAULTS = {"weight_decay": None, "warmup_steps": None}
# model spec key -> (plugin kind, default): tagged with name, distribution and version; named in the run name
# when not the default
PLUGIN_KEYS = {
    "pool": ("poolings", "cls"),
    "readout": ("poolings", "last_token"),
    "residual": ("residuals", "add"),
    "mixer": ("mixers", "attention"),
    "depth_regularizer": ("depth_regularizers", None),
}


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
        init_from: start from a pretrained checkpoint instead of the preset ``model`` (docs/pretrained.md):
            ``hf:<id or dir>``, ``nanogpt:<ckpt.pt>``, ``timm:<name>[:<file>]``, ``torchvision:<resnet18|50>``.
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
        fast_norms: the built-in norms' fast paths (exact, default on); False runs their reference eager code.
        compile_norms: run the norms' fast paths on ``torch.compile``d kernels (``normlight.compile_norms``);
            the compile time of the first step is logged as the MLflow param ``compile_norms_seconds``.
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
        init_from: str | None = None,
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
        fast_norms: bool = True,
        compile_norms: bool = False,
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
        self._model_spec = spec
        self.norm_context: dict | None = None  # schedule context the norms were built with; None = not yet
        self.model = self.build_model({})
        self._compile_logged = not compile_norms
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
            **({"init_from": hp.init_from} if hp.init_from else {}),
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
        for key, (kind, _) in PLUGIN_KEYS.items():
            if key not in spec:
                continue  # the model has no such slot (ResNet, timm)
            tags[key] = str(spec[key])
            try:
                entry = registry.lookup(kind, tags[key])
            except NormlightError:
                continue
            tags[f"{key}_dist"], tags[f"{key}_version"] = entry.dist, entry.version
        commit = mlflow_utils.git_commit()
        if commit:
            tags["git_commit"] = commit
        if self.applied_defaults:
            tags["recommended_defaults_applied"] = ",".join(f"{k}={v}" for k, v in self.applied_defaults.items())
        return tags

    def run_name(self) -> str:
        """A readable run name: ``<preset>/<placement>/<norm>[/pool-gem/...]/lr<lr>/s<seed>`` (no placement for
        ResNet/timm; plugin slots such as pool or residual only when not at their default)."""
        tags = self.run_tags()
        parts = [self.hparams.init_from or self.hparams.model]
        if self.placement_cls is not None:
            parts.append(tags["placement"])
        parts.append(tags["norm"])
        if tags["qk_norm"] not in ("None", ""):
            parts.append(f"qk-{tags['qk_norm']}")
        parts += [f"{k}-{tags[k]}" for k, (_, default) in PLUGIN_KEYS.items() if k in tags and tags[k] != str(default)]
        parts += [f"lr{format_lr(self.hparams.lr)}", f"s{os.environ.get('PL_GLOBAL_SEED', 'x')}"]
        return "/".join(parts)

    # ------------------------------------------------------------------ the schedule in the norms' context
    def build_model(self, context: dict) -> torch.nn.Module:
        """The model, its norms built with ``context`` (schedule keys); records which norms asked for it."""
        with norm_scope(**context) as scope:
            init_from = self.hparams.init_from
            model = (
                load_pretrained(init_from, **self._model_spec)
                if init_from
                else create_model(self.hparams.model, **self._model_spec)
            )
        self._norm_records = scope.records
        norm_fast.set_fast_norms(model, self.hparams.fast_norms)
        if self.hparams.compile_norms:
            norm_fast.compile_norms(model)
        return model

    def schedule_steps(self) -> tuple[int, int]:
        """``(total, warmup)`` optimizer steps of this fit: the Trainer's estimate and the effective LR warmup."""
        total = self.trainer.estimated_stepping_batches if self.trainer is not None else math.inf
        total = int(total) if math.isfinite(total) else 10**9
        warmup = self.warmup_steps if self.warmup_steps is not None else int(0.05 * total) if total < 10**9 else 0
        return total, warmup

    def use_norm_context(self, context: dict) -> None:
        """Rebuild the model with ``context`` if a norm asks for schedule keys and it differs from the current one.

        Parameters carry over and the global RNG is left as it was, so the weights and the data order do not change.
        """
        asks = any(r.schedule_keys for r in self._norm_records)
        if asks and context != (self.norm_context or {}):
            old = self.model
            with torch.random.fork_rng(devices=[]):
                self.model = self.build_model(context)
            params = {k for k, _ in old.named_parameters()}
            if params != {k for k, _ in self.model.named_parameters()}:
                raise NormlightError(
                    "a norm changed the model's parameters when built with the training schedule; "
                    "the schedule may change a norm's settings and buffers, not its parameters"
                )
            self.model.load_state_dict({k: v for k, v in old.state_dict().items() if k in params}, strict=False)
        self.norm_context = dict(context)

    def schedule_params(self) -> dict[str, Any]:
        """Effective schedule and the options norms derived from it, as flat MLflow params."""
        total, warmup = self.schedule_steps()
        params: dict[str, Any] = {"schedule/total_steps": total, "schedule/warmup_steps": warmup}
        params.update({f"norm_context/{k}": v for k, v in (self.norm_context or {}).items()})
        by_key: dict[str, dict[str, Any]] = {}
        for r in self._norm_records:
            resolved = getattr(r.module, "resolved_options", None)
            for k, v in (resolved() if callable(resolved) else {}).items():
                by_key.setdefault(k, {})[str(r.site)] = v
        for k, per_site in by_key.items():
            if len(set(map(str, per_site.values()))) == 1:
                params[f"norm/{k}"] = next(iter(per_site.values()))
            else:
                params.update({f"norm/{site}/{k}": v for site, v in per_site.items()})
        return params

    def setup(self, stage: str) -> None:
        """Check the data against the model, give the norms the fit's schedule (first fit only), then name,
        tag and parametrize the MLflow run (rank 0; no-op without MLflow)."""
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None:
            self.check_data(dm)
        if stage == "fit" and self.norm_context is None:
            total, warmup = self.schedule_steps()
            k = max(1, int(getattr(self.trainer, "accumulate_grad_batches", 1) or 1))
            self.use_norm_context({"total_steps": total * k, "warmup_steps": warmup * k})
        mlflow_utils.set_default_run_name(self.trainer, self.run_name())
        mlflow_utils.set_tags(self.trainer, self.run_tags())
        if stage == "fit":
            mlflow_utils.log_params(self.trainer, self.schedule_params())

    def configure_model(self) -> None:
        """Shard the model with FSDP2 when the strategy provides a device mesh (ModelParallelStrategy)."""
        if getattr(self, "device_mesh", None) is not None:
            fsdp2_shard(self.model, self.device_mesh)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the MLflow run id (resuming continues the same run) and the norms' schedule context."""
        checkpoint["normlight"] = {
            "mlflow_run_id": mlflow_utils.get_run_id(self.trainer),
            "version": __version__,
            "norm_context": self.norm_context or {},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Rebuild the norms with the checkpoint's schedule context before its weights load (old ones: none)."""
        self.use_norm_context(dict((checkpoint.get("normlight") or {}).get("norm_context") or {}))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the first training step (forward + backward compiled): log the norms' compile time once."""
        if not self._compile_logged:
            stats = norm_fast.compile_stats()
            params = {"compile_norms_seconds": round(stats["seconds"], 2), "compile_norms_graphs": stats["graphs"]}
            mlflow_utils.log_params(self.trainer, params)
            self._compile_logged = True

    # ------------------------------------------------------------------ optimization
    def log_train_loss(self, loss: torch.Tensor) -> None:
        """``train/loss`` and ``lr`` every step."""
        # sync_dist: under data parallelism train/loss is the global-batch loss (mean over ranks), not rank 0's share
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, sync_dist=True)
        if self.trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)

    def with_early_exits(self, loss: torch.Tensor, loss_fn) -> torch.Tensor:
        """The training loss with the model's early exits (LayerSkip): ``w_L loss + sum_l w_l loss_fn(exit_l)``."""
        exits = getattr(self.model, "early_exits", None)
        if not self.training or not exits:
            return loss
        final_weight, layers = exits
        self.model.early_exits = None  # used once; keep no graph alive on the model
        return final_weight * loss + sum(w * loss_fn(logits) for w, logits in layers)

    def configure_optimizers(self):
        """Optimizer over (decay, no-decay) groups plus a per-step warmup + cosine schedule."""
        hp = self.hparams
        groups = optim.param_groups(self.model, self.weight_decay, hp.decay_norm_and_bias)
        opt = optim.build_optimizer(
            hp.optimizer, groups, hp.lr, betas=hp.betas, eps=hp.eps, momentum=hp.momentum, nesterov=hp.nesterov
        )
        total, warmup = self.schedule_steps()
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
