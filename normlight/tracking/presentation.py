"""How runs read in the console and the MLflow UI: the one-line result of a fit.

The line names the run, its final and best validation loss and headline metric (perplexity or top-1
accuracy), whether it diverged, and the UI link of its MLflow run in the model-training view.
"""

from __future__ import annotations

import math

from normlight.tracking.ui import ui_link

HEADLINE = ("val/ppl", "val/acc1")


def _fmt(name: str, value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{100 * value:.1f}%" if "acc" in name.rsplit("/", 1)[-1] else f"{value:.4g}"


def result_line(
    run_name: str,
    step: int,
    final: dict[str, float],
    best: dict[str, float],
    diverged_step: int | None,
    run_id: str | None,
    experiment_id: str | None,
) -> str:
    """``normlight: <run> finished at step N: val/loss 3.257 (best 3.2), val/ppl 25.97 (best 24.8), not diverged;
    <UI link>`` (``no validation`` when there was none)."""
    parts = []
    for name in ("val/loss", *HEADLINE):
        if name in final:
            text = f"{name} {_fmt(name, final[name])}"
            if name in best:
                text += f" (best {_fmt(name, best[name])})"
            parts.append(text)
    shown = ", ".join(parts) if parts else "no validation"
    div = f"DIVERGED at step {diverged_step}" if diverged_step is not None else "not diverged"
    where = f"; {ui_link(experiment_id, run_id)}" if run_id and experiment_id else ""
    return f"normlight: {run_name} finished at step {step}: {shown}, {div}{where}"
