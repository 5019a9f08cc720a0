"""How runs read in the console and the MLflow UI.

- :func:`result_line`: the one line a fit prints when it ends (final and best validation loss and headline
  metric, diverged or not, the UI link);
- :func:`update_view`: the experiment's ``normlight`` view, an MLflow *shared view state* (experiment tag
  ``mlflow.sharedViewState.normlight``, opened by ``?viewStateShareKey=normlight``): the runs table shows
  ``val/loss``, the headline metric (``val/ppl`` / ``val/acc1``), ``summary/diverged``, the max stable LR
  (once ``normlight compare`` ran) and the params that vary between runs (a sweep's runs folded under its
  parent run); the chart view lists the ``val``, ``summary`` and ``train`` sections before the many
  ``diag`` ones and draws up to 20 runs;
- :func:`sweep_parent`: a sweep as a parent run whose children are its grid points (the UI folds them).
"""

from __future__ import annotations

import json
import math

from normlight.tracking.run_fields import is_seed_key, run_config
from normlight.tracking.ui import VIEW_KEY, ui_link

HEADLINE = ("val/ppl", "val/acc1")
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
PARENT_TAG = "normlight.parent"
SWEEP_PARENT_TAG = "normlight.sweep_parent"
PARENT_RUN = "mlflow.parentRunId"
NOTE = "mlflow.note.content"  # the run description MLflow shows on the run page
MAX_STABLE_LR_TAG = "max_stable_lr"
SECTION_ORDER = ("val", "summary", "train", "")  # "" = metrics without a prefix (lr, epoch); diag/* after
MAX_PARAM_COLUMNS = 8
MAX_CHARTS = 24


def _fmt(name: str, value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{100 * value:.1f}%" if "acc" in name.rsplit("/", 1)[-1] else f"{value:.4g}"


def result_text(run_name: str, step: int, final: dict, best: dict, diverged_step: int | None) -> str:
    """``<run> finished at step N: val/loss 3.257 (best 3.2), val/ppl 25.97 (best 24.8), not diverged``."""
    parts = []
    for name in ("val/loss", *HEADLINE):
        if name in final:
            text = f"{name} {_fmt(name, final[name])}"
            if name in best:
                text += f" (best {_fmt(name, best[name])})"
            parts.append(text)
    shown = ", ".join(parts) if parts else "no validation"
    div = f"DIVERGED at step {diverged_step}" if diverged_step is not None else "not diverged"
    return f"{run_name} finished at step {step}: {shown}, {div}"


def result_line(
    run_name: str,
    step: int,
    final: dict[str, float],
    best: dict[str, float],
    diverged_step: int | None,
    run_id: str | None,
    experiment_id: str | None,
    view: bool = False,
) -> str:
    """``normlight: <result_text>; run <id8>: <UI link of the experiment's runs>``."""
    line = f"normlight: {result_text(run_name, step, final, best, diverged_step)}"
    if run_id and experiment_id:
        line += f"; run {run_id[:8]}: {ui_link(experiment_id, view=view)}"
    return line


# ---------------------------------------------------------------------------------------------- UI view
def _training_runs(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += [r for r in page if r.data.tags.get(PARENT_TAG) != "true" and "normlight.compare" not in r.data.tags]
        token = page.token
        if not token:
            return runs


def _col(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"


def _chart(uuid: str, section: str, metric: str, display: str) -> dict:
    """One line chart card (metric against step) in the format MLflow's UI keeps in its view state."""
    return {
        "uuid": uuid,
        "type": "LINE",
        "runsCountToCompare": 10,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": True,
        "metricKey": metric,
        "displayName": display,
        "lineSmoothness": 0,
        "xAxisScaleType": "linear",
        "scaleType": "linear",
        "range": {},
        "xAxisKey": "step",
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "useGlobalXaxisKey": True,
        "useGlobalLineSmoothing": True,
    }


def view_state(runs) -> dict:
    """The ``normlight`` view of an experiment's runs (see module doc)."""
    metrics = sorted({m for r in runs for m in r.data.metrics})
    columns = [_col("metrics", m) for m in ("val/loss", *HEADLINE, "summary/diverged") if m in metrics]
    if any(MAX_STABLE_LR_TAG in r.data.tags for r in runs):
        columns.append(_col("tags", MAX_STABLE_LR_TAG))
    configs = [run_config(r) for r in runs]
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({c.get(k) for c in configs}) > 1]
    first = [k for k in varying if k.rsplit(".", 1)[-1] in ("model", "norm", "placement", "lr")]
    rest = [k for k in varying if k not in first and not is_seed_key(k)]
    seeds = [k for k in varying if is_seed_key(k)]
    columns += [_col("params", k) for k in (first + rest)[:MAX_PARAM_COLUMNS] + seeds[:1]]

    # chart sections: val, summary, train, the un-prefixed metrics, then diag and the rest
    def section_of(m: str) -> str:
        return m.rsplit("/", 1)[0] if "/" in m else ""

    names = sorted(
        {section_of(m) for m in metrics},
        key=lambda s: (SECTION_ORDER.index(s) if s in SECTION_ORDER else len(SECTION_ORDER), s),
    )
    sections = [
        {
            "uuid": f"normlight-{n or 'model'}",
            "name": n or "Model metrics",
            "display": True,
            "isReordered": False,
            "deleted": False,
            "isGenerated": True,
        }
        for n in names
    ]
    # cards only for the few headline sections; MLflow adds the diag charts into their (named) sections itself,
    # and an experiment tag holds at most 20,000 characters
    charts = [
        _chart(f"normlight-{m}", f"normlight-{section_of(m) or 'model'}", m, m.rsplit("/", 1)[-1])
        for n in names
        if n in SECTION_ORDER
        for m in metrics
        if section_of(m) == n
    ][:MAX_CHARTS]
    return {
        "selectedColumns": columns,
        "compareRunSections": sections,
        "compareRunCharts": charts,
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
        "runsHiddenMode": "FIRST_20_RUNS",  # charts draw up to 20 runs (MLflow's default is 10)
    }


def update_view(client, experiment_id: str) -> None:
    """Write the experiment's ``normlight`` view from its current runs (cheap; safe to call after each run).
    A view that cannot be written is reported, never raised: it must not fail the run that asked for it."""
    try:
        runs = _training_runs(client, experiment_id)
        if runs:
            state = json.dumps(view_state(runs), separators=(",", ":"))
            client.set_experiment_tag(experiment_id, VIEW_TAG, state)
    except Exception as exc:  # noqa: BLE001 - presentation only; the results are recorded already
        print(f"normlight: could not update the MLflow UI view of experiment {experiment_id}: {exc}", flush=True)


def has_view(client, experiment_id: str) -> bool:
    """Whether the experiment has the ``normlight`` view (links add ``viewStateShareKey`` only then)."""
    return VIEW_TAG in client.get_experiment(experiment_id).tags


def describe_run(client, run_id: str, text: str) -> None:
    """Set the run's description (shown on its page in the UI)."""
    client.set_tag(run_id, NOTE, text)


# ---------------------------------------------------------------------------------------------- sweeps
def sweep_parent(client, experiment_id: str, sweep: str, description: str = "") -> str:
    """The parent run of sweep ``sweep`` (created RUNNING on first use; reopened later): the UI folds the
    sweep's runs under it."""
    # tagged normlight.sweep_parent, not `sweep`: the sweep's own bookkeeping (tag `sweep`) never sees it
    found = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_PARENT_TAG}` = '{sweep}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = {SWEEP_PARENT_TAG: sweep, PARENT_TAG: "true", NOTE: description or f"sweep {sweep}"}
    return client.create_run(experiment_id, run_name=f"sweep/{sweep}", tags=tags).info.run_id
