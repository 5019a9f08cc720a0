"""Run-level summary: best and final validation metrics, divergence, spikes and steps to a target (D14/D21)."""

from __future__ import annotations

import math


def higher_is_better(name: str) -> bool:
    """Accuracy-like metrics are maximized; losses and perplexities minimized."""
    return "acc" in name.rsplit("/", 1)[-1]


class RunSummary:
    """Collects validation results over a run and renders ``summary/...`` metrics."""

    def __init__(self, target_metric: str = "val/loss", target_value: float | None = None):
        self.target_metric, self.target_value = target_metric, target_value
        self.best: dict[str, float] = {}
        self.final: dict[str, float] = {}
        self.steps_to_target: int | None = None

    def update(self, step: int, metrics: dict[str, float]) -> None:
        """Record the validation metrics (``val/...``) observed at ``step``."""
        for name, value in metrics.items():
            if not name.startswith("val/"):
                continue
            value = float(value)
            self.final[name] = value
            if not math.isfinite(value):
                continue
            best = self.best.get(name)
            better = best is None or (value > best if higher_is_better(name) else value < best)
            if better:
                self.best[name] = value
        if self.steps_to_target is None and self.target_value is not None:
            v = metrics.get(self.target_metric)
            if v is not None and math.isfinite(float(v)):
                hit = (
                    float(v) >= self.target_value
                    if higher_is_better(self.target_metric)
                    else float(v) <= self.target_value
                )
                if hit:
                    self.steps_to_target = int(step)

    def metrics(self, *, diverged: bool, diverged_step: int | None, spikes: int) -> dict[str, float]:
        """The ``summary/...`` metrics (names use ``_`` for the ``/`` of the source metric)."""
        out: dict[str, float] = {"summary/diverged": float(diverged), "summary/loss_spikes": float(spikes)}
        if diverged_step is not None:
            out["summary/diverged_step"] = float(diverged_step)
        for name, v in self.best.items():
            out[f"summary/best_{name.replace('/', '_')}"] = v
        for name, v in self.final.items():
            out[f"summary/final_{name.replace('/', '_')}"] = v
        if self.steps_to_target is not None:
            out["summary/steps_to_target"] = float(self.steps_to_target)
        return out
