"""A small real MLflow store as a researcher's project holds it after a sweep and a comparison.

Runs are logged with MLflow's client (no training: the browser tests only read them), then organized the
way normlight does it for real runs: a sweep parent run with its grid points as children, the experiment's
``normlight`` view, ``normlight compare`` outputs in ``<experiment>/compare``.
"""

from __future__ import annotations

import math
from pathlib import Path

EXPERIMENT = "ui-demo"
SWEEP = "demo"
PLACEMENTS = ("pre", "post")
LRS = ("0.001", "0.01")


def build(root: Path, template: Path | None = None) -> str:
    """Create the store in ``root`` (copying an initialized empty ``template`` sqlite file if given); returns
    its tracking URI."""
    import shutil

    from mlflow.entities import Metric, Param

    from normlight.tracking import compare, presentation, sweep_runs

    root.mkdir(parents=True, exist_ok=True)
    if template is not None:
        shutil.copy(template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    c = sweep_runs.client(uri)
    exp = sweep_runs.ensure_experiment(c, EXPERIMENT, uri)
    parent = presentation.sweep_parent(c, exp, SWEEP, "gpt-nano, placement x learning rate")
    (root / "config.yaml").write_text("model: {placement: pre}\n")
    for placement in PLACEMENTS:
        for lr in LRS:
            loss = 3.0 + (0.3 if placement == "post" else 0.0) + (0.2 if lr == "0.01" else 0.0)
            tags = {
                presentation.PARENT_RUN: parent,
                "sweep": SWEEP,
                "family": "gpt",
                "preset": "gpt-nano",
                "norm": "layernorm",
                "placement": placement,
                "diverged": "false",
            }
            rid = c.create_run(exp, run_name=f"{SWEEP}/{placement}/lr={lr}", tags=tags).info.run_id
            metrics = [Metric("val/loss", loss + 1.0, 0, 10), Metric("val/loss", loss, 0, 20)]
            metrics += [Metric("val/ppl", math.exp(loss), 0, 20), Metric("summary/diverged", 0.0, 0, 20)]
            metrics += [Metric("train/loss", loss + 0.1, 0, s) for s in (0, 10, 20)]
            metrics += [Metric("lr", float(lr), 0, s) for s in (0, 10, 20)]
            metrics += [Metric(f"diag/grad_norm/l0{i}", 0.1 * (i + 1), 0, 20) for i in range(2)]
            metrics += [Metric("diag/grad_norm", 0.3, 0, 20), Metric("diag/resid_rms/l00", 1.0, 0, 20)]
            params = {"model.model": "gpt-nano", "model.placement": placement, "model.lr": lr, "seed_everything": "0"}
            c.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
            c.log_artifact(rid, str(root / "config.yaml"))
            c.set_terminated(rid, "FINISHED")
    c.set_terminated(parent, "FINISHED")
    result = compare.compare(c, EXPERIMENT, None, "val/loss", root / "cmp")
    compare.log_comparison(c, EXPERIMENT, result, "val/loss", uri)
    return uri
