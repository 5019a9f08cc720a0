"""``StabilityDiagnostics``: the stability diagnostics of any normlight run, bundled in one Lightning callback.

It orchestrates the per-diagnostic modules of this package:

- every step (cheap scalars): global pre-clip gradient norm, loss-spike score, divergence guard;
- every ``every_n_steps`` training steps: plugin scalars (GeM p, DWA weights, gates, drop-path rates: any
  module's ``diagnostics()``), per-block gradient norms, residual-stream RMS and massive
  activations (forward hooks on ``model.blocks`` during the training forward), attention entropy and max
  logit (the blocks' ``record_attention`` mode, on an extra no-grad forward of ``attention_samples``
  samples of the batch), batch-statistics fluctuation, throughput and peak memory;
- at each validation: block influence on a fixed probe batch and the run summary;
- at the end of training: ``summary/...`` metrics (best/final validation metrics, diverged flag and
  step, spike count, steps to a target, throughput, peak memory).

Metrics go to every logger of the trainer at the global step (rank 0 only, as Lightning loggers are);
run tags (``diverged``) go through ``normlight.tracking.mlflow_utils``. A NaN/Inf loss or gradient
stops the run cleanly: the bad update is skipped, ``trainer.should_stop`` is set, the run is tagged
``diverged=true`` and the process ends normally, so a sweep simply moves on.
"""

from __future__ import annotations

import functools
import math
import time

import torch
from lightning.pytorch.callbacks import Callback

from normlight.diagnostics import attention, batch_stats, block_influence, grad_norm, plugin_state, residual, summary
from normlight.diagnostics.loss_spikes import DivergenceGuard, SpikeDetector
from normlight.diagnostics.throughput import ThroughputMeter, batch_inputs, peak_memory_mb
from normlight.tracking.mlflow_utils import set_tags


def _model_input(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Float inputs (images) follow the model's parameter dtype, so probes also work under bf16-true."""
    if x.is_floating_point():
        p = next(model.parameters(), None)
        if p is not None and p.is_floating_point():
            return x.to(p.dtype)
    return x


def _timed(hook):
    """Adds the wall time spent in a hook to ``self.seconds`` (the diagnostics' own cost, logged at the end)."""

    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    return wrapper


def _per_layer(prefix: str, values) -> dict[str, float]:
    return {f"{prefix}/l{i:02d}": float(v) for i, v in enumerate(values)}


class StabilityDiagnostics(Callback):
    """Log stability diagnostics (see module docstring); every argument has a cheap default.

    Args:
        every_n_steps: period, in optimizer steps, of the per-layer diagnostics.
        grad_norm: log global (every diagnostic step) and per-block gradient norms.
        loss_spikes: count loss spikes (robust z-score over ``spike_window`` steps above ``spike_threshold``).
        residual: residual-stream RMS per layer, growth slope over depth, massive activations.
        attention: attention entropy (normalized for causal masks) and max attention logit per layer.
        block_influence: 1 - cos(h_in, h_out) per block on a fixed probe batch at each validation.
        batch_stats: fluctuation of norms with ``uses_batch_statistics``.
        throughput: tokens/images per second (summed over ranks) and peak memory.
        plugins: learned/scheduled scalars of plugin modules with a ``diagnostics()`` hook (``diag/plugin/...``).
        divergence_guard: stop cleanly and tag the run on a NaN/Inf loss or gradient.
        spike_window: number of past losses the spike detector compares against.
        spike_threshold: robust z-score above which a loss counts as a spike.
        target_metric: validation metric for ``summary/steps_to_target``.
        target_value: the target (reached when <= for losses, >= for accuracies); None disables it.
        probe_size: number of samples of the first validation batch kept as the probe batch.
        attention_samples: samples of the current training batch used for the attention diagnostics,
            measured on an extra no-grad eval-mode forward (the training step keeps its fast attention).
    """

    def __init__(
        self,
        every_n_steps: int = 25,
        grad_norm: bool = True,
        loss_spikes: bool = True,
        residual: bool = True,
        attention: bool = True,
        block_influence: bool = True,
        batch_stats: bool = True,
        throughput: bool = True,
        plugins: bool = True,
        divergence_guard: bool = True,
        spike_window: int = 100,
        spike_threshold: float = 6.0,
        target_metric: str = "val/loss",
        target_value: float | None = None,
        probe_size: int = 8,
        attention_samples: int = 4,
    ):
        if every_n_steps < 1:
            raise ValueError(f"diagnostics.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.enabled = {
            "grad_norm": grad_norm,
            "loss_spikes": loss_spikes,
            "residual": residual,
            "attention": attention,
            "block_influence": block_influence,
            "batch_stats": batch_stats,
            "throughput": throughput,
            "plugins": plugins,
        }
        self.divergence_guard = divergence_guard
        self.probe_size = probe_size
        self.attention_samples = attention_samples
        self.spikes = SpikeDetector(spike_window, spike_threshold)
        self.guard = DivergenceGuard()
        self.summary = summary.RunSummary(target_metric, target_value)
        self.meter = ThroughputMeter()
        self.logged: list[tuple[int, dict[str, float]]] = []  # everything this callback logged, in order
        self._probe = None
        self._recorders: dict = {}
        self._pending: dict[str, float] = {}
        self._step = 0
        self._grad_max = 0.0
        self.seconds = 0.0  # wall time spent in this callback's hooks and forward hooks

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _model(pl_module):
        return getattr(pl_module, "model", pl_module)

    @staticmethod
    def _blocks(pl_module):
        return list(getattr(StabilityDiagnostics._model(pl_module), "blocks", None) or [])

    def _is_diag_step(self, step: int) -> bool:
        return step % self.every_n_steps == 0

    def _log(self, trainer, metrics: dict[str, float], step: int) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        self.logged.append((step, metrics))
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=step)

    @staticmethod
    def _tags(trainer, tags: dict) -> None:
        set_tags(trainer, {k: str(v) for k, v in tags.items()})

    def _diverge(self, trainer, value: float, what: str) -> None:
        if self.guard.check(value, self._step, what):
            trainer.should_stop = True
            self._tags(
                trainer, {"diverged": "true", "diverged_step": self.guard.step, "diverged_reason": self.guard.reason}
            )

    # ------------------------------------------------------------------ training hooks
    def on_train_start(self, trainer, pl_module):
        self._tags(trainer, {"diverged": "false"})
        self.meter = ThroughputMeter()

    @_timed
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step = trainer.global_step
        if self.enabled["throughput"]:
            self.meter.add(batch)
        if not self._is_diag_step(self._step) or self._recorders:
            return
        blocks = self._blocks(pl_module)
        if self.enabled["residual"] and blocks:
            self._recorders["residual"] = residual.ResidualRecorder(blocks)

    @_timed
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # Runs after backward (and AMP un-scaling) and before Lightning's gradient clipping.
        if not (self.enabled["grad_norm"] or self.divergence_guard):
            return
        total = float(grad_norm.global_grad_norm(pl_module.parameters()))
        fp16_scaler = getattr(trainer.precision_plugin, "scaler", None) is not None
        if not math.isfinite(total):
            if self.divergence_guard and not fp16_scaler:  # an fp16 loss scaler skips inf steps itself
                self._diverge(trainer, total, "gradient norm")
                for p in pl_module.parameters():  # skip the corrupting update
                    p.grad = None
            return
        self._grad_max = max(self._grad_max, total)
        if self.enabled["grad_norm"] and self._is_diag_step(self._step):
            self._pending["diag/grad_norm"] = total
            self._pending["diag/grad_norm_max"] = self._grad_max
            self._grad_max = 0.0
            profile = grad_norm.block_grad_norms(self._blocks(pl_module))
            if profile["block"]:
                self._pending.update(_per_layer("diag/grad_norm", profile["block"]))
                for part in ("attn", "mlp"):
                    if part in profile:
                        self._pending.update(_per_layer(f"diag/grad_norm_{part}", profile[part]))
                self._pending["diag/grad_norm_cv"] = grad_norm.coefficient_of_variation(profile["block"])
                if profile["block"][-1] > 0:
                    self._pending["diag/grad_norm_first_last"] = profile["block"][0] / profile["block"][-1]

    @_timed
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            value = float(loss.detach())
            if not math.isfinite(value):
                if self.divergence_guard:
                    self._diverge(trainer, value, "loss")
            elif self.enabled["loss_spikes"] and self.spikes.update(value):
                self._pending["diag/loss_spike"] = 1.0
        if not self._is_diag_step(self._step):
            if self._pending:  # a spike on an ordinary step is logged right away
                self._log(trainer, self._pending, self._step)
                self._pending = {}
            return
        self._collect(trainer, pl_module, batch)
        self._log(trainer, self._pending, self._step)
        self._pending = {}

    @torch.no_grad()
    def _attention_probe(self, pl_module, batch) -> None:
        # The slow explicit-attention path runs on a separate no-grad forward of a few samples of this
        # batch, in eval mode (batch-statistic norms must not update their running stats here), so the
        # training step itself keeps the fast kernel and its exact numerics.
        blocks = self._blocks(pl_module)
        x = batch_inputs(batch)
        if not blocks or not isinstance(x, torch.Tensor):
            return
        model = self._model(pl_module)
        rec = attention.AttentionRecorder(blocks)
        if not rec.attns:
            rec.remove()
            return
        was_training = model.training
        model.eval()
        try:
            model(_model_input(model, x[: self.attention_samples]))
        finally:
            model.train(was_training)
            self._recorders["attention"] = rec

    def _collect(self, trainer, pl_module, batch) -> None:
        m = self._pending
        rec = self._recorders.pop("residual", None)
        if rec is not None:
            res = rec.remove()
            self.seconds += rec.seconds  # spent inside the training forward
            if res["rms"]:
                m.update(_per_layer("diag/resid_rms", res["rms"]))
                m.update(_per_layer("diag/massive_act", res["max_over_median"]))
                m["diag/resid_growth_slope"] = residual.growth_slope(res["rms"])
                m["diag/massive_act_max"] = max(res["max_over_median"])
                m["diag/resid_max_abs"] = max(res["max_abs"])
        if self.enabled["attention"]:  # after the residual hooks are gone: the probe forward must not feed them
            self._attention_probe(pl_module, batch)
        rec = self._recorders.pop("attention", None)
        if rec is not None:
            att = rec.remove()
            if att["entropy"]:
                m.update(_per_layer("diag/attn_entropy", att["entropy"]))
                m["diag/attn_entropy_mean"] = sum(att["entropy"]) / len(att["entropy"])
                m["diag/attn_entropy_min"] = min(att["entropy_min"])
            if att.get("max_logit"):
                m.update(_per_layer("diag/attn_max_logit", att["max_logit"]))
                m["diag/attn_max_logit"] = max(att["max_logit"])
        if self.enabled["batch_stats"]:
            fl = batch_stats.module_fluctuations(batch_stats.batch_stat_modules(pl_module))
            if fl:
                m.update(_per_layer("diag/bstat_fluct", fl))
                m["diag/bstat_fluct_mean"] = sum(fl) / len(fl)
        if self.enabled["plugins"]:
            m.update(plugin_state.plugin_scalars(self._model(pl_module)))
        if self.enabled["loss_spikes"]:
            m["diag/loss_spikes"] = self.spikes.count
            m["diag/loss_zscore"] = self.spikes.last_z
        if self.enabled["throughput"]:
            items, dt = self.meter.read()
            rate = torch.tensor(
                items / dt if dt > 0 else 0.0, dtype=torch.float64, device=pl_module.device
            )  # NCCL reduces only CUDA tensors
            rate = trainer.strategy.reduce(rate, reduce_op="sum")  # all ranks -> one number
            m[f"diag/{self.meter.unit}_per_sec"] = float(rate)
            m["diag/peak_mem_mb"] = peak_memory_mb(pl_module.device)

    # ------------------------------------------------------------------ validation hooks
    @_timed
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self._probe is None and batch_idx == 0 and dataloader_idx == 0:
            x = batch_inputs(batch)
            if isinstance(x, torch.Tensor):
                self._probe = x[: self.probe_size].detach().clone()

    @_timed
    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        step = trainer.global_step
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
        self.summary.update(step, metrics)
        blocks = self._blocks(pl_module)
        if self.enabled["block_influence"] and blocks and self._probe is not None:
            model = self._model(pl_module)
            was_training = model.training
            model.eval()
            try:
                bi = block_influence.probe_block_influence(
                    model, blocks, _model_input(model, self._probe.to(pl_module.device))
                )
            finally:
                model.train(was_training)
            out = _per_layer("diag/block_influence", bi)
            finite = [v for v in bi if math.isfinite(v)]
            if finite:
                out["diag/block_influence_mean"] = sum(finite) / len(finite)
                out["diag/block_influence_min"] = min(finite)
            self._log(trainer, out, step)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        """What a resumed run needs to continue exactly (saved in every checkpoint; plain values only, so a
        ``weights_only`` load reads it): the loss-spike window, the divergence guard and the validation summary."""
        return {
            "spike_history": list(self.spikes.history),
            "spike_count": self.spikes.count,
            "spike_last_z": self.spikes.last_z,
            "diverged": [self.guard.diverged, self.guard.step, self.guard.reason],
            "best": dict(self.summary.best),
            "final": dict(self.summary.final),
            "steps_to_target": self.summary.steps_to_target,
            "grad_max": self._grad_max,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Continue from :meth:`state_dict` (a checkpoint written before it existed restores nothing)."""
        if "spike_history" not in state_dict:
            return
        self.spikes.history.clear()
        self.spikes.history.extend(state_dict["spike_history"])
        self.spikes.count, self.spikes.last_z = state_dict["spike_count"], state_dict["spike_last_z"]
        self.guard.diverged, self.guard.step, self.guard.reason = state_dict["diverged"]
        self.summary.best, self.summary.final = dict(state_dict["best"]), dict(state_dict["final"])
        self.summary.steps_to_target, self._grad_max = state_dict["steps_to_target"], state_dict["grad_max"]

    # ------------------------------------------------------------------ end of run
    def summary_metrics(self, pl_module=None) -> dict[str, float]:
        """The run-level ``summary/...`` metrics as they stand now."""
        out = self.summary.metrics(
            diverged=self.guard.diverged, diverged_step=self.guard.step, spikes=self.spikes.count
        )
        if self.enabled["throughput"] and self.meter.total_time > 0:
            out[f"summary/{self.meter.unit}_per_sec"] = self.meter.total_items / self.meter.total_time
        if pl_module is not None:
            out["summary/peak_mem_mb"] = peak_memory_mb(pl_module.device)
        out["summary/diagnostics_seconds"] = self.seconds
        return out

    def on_train_end(self, trainer, pl_module):
        if self.enabled["throughput"]:
            items, dt = self.meter.read()  # fold the last partial interval into the totals
        out = self.summary_metrics(pl_module)
        if self.enabled["throughput"]:
            key = f"summary/{self.meter.unit}_per_sec"
            if key in out:
                out[key] = float(
                    trainer.strategy.reduce(
                        torch.tensor(out[key], dtype=torch.float64, device=pl_module.device), reduce_op="sum"
                    )
                )
        self._log(trainer, out, trainer.global_step)
        if self.guard.diverged:
            self._tags(
                trainer, {"diverged": "true", "diverged_step": self.guard.step, "diverged_reason": self.guard.reason}
            )
