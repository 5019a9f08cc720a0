"""The run summary: best and final validation metrics and steps to a target."""

import math

from normlight.diagnostics import (
    summary,
)

# ---------------------------------------------------------------- loss spikes


def test_run_summary_best_final_and_target():
    s = summary.RunSummary("val/acc1", 0.5)
    s.update(10, {"val/loss": 2.0, "val/acc1": 0.3})
    s.update(20, {"val/loss": 1.5, "val/acc1": 0.6})
    s.update(30, {"val/loss": float("nan"), "val/acc1": 0.55})
    out = s.metrics(diverged=True, diverged_step=25, spikes=2)
    assert out["summary/best_val_loss"] == 1.5 and math.isnan(out["summary/final_val_loss"])
    assert out["summary/best_val_acc1"] == 0.6 and out["summary/final_val_acc1"] == 0.55
    assert out["summary/steps_to_target"] == 20 and out["summary/diverged"] == 1.0
    assert out["summary/diverged_step"] == 25 and out["summary/loss_spikes"] == 2
