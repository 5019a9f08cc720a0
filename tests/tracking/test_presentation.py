"""The run presentation pieces without a server: the result line and the experiment's UI view state
(the browser test, tests/cli/test_ui_browser.py, checks what MLflow's UI makes of it)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from normlight.tracking import presentation


def _run(metrics, params, tags=None):
    return SimpleNamespace(data=SimpleNamespace(metrics=metrics, params=params, tags=tags or {}))


def test_result_text_and_line():
    text = presentation.result_text(
        "vit-tiny/pre/dyt/lr2e-3/s0",
        120,
        {"val/loss": 0.61234, "val/acc1": 0.9123},
        {"val/loss": 0.6, "val/acc1": 0.92},
        None,
    )
    assert (
        text
        == "vit-tiny/pre/dyt/lr2e-3/s0 finished at step 120: val/loss 0.6123 (best 0.6), val/acc1 91.2% (best 92.0%), not diverged"
    )
    assert presentation.result_text("r", 7, {}, {}, 5) == "r finished at step 7: no validation, DIVERGED at step 5"
    line = presentation.result_line("r", 7, {}, {}, None, "0123456789abcdef", "3", view=True)
    assert line.endswith(
        "; run 01234567: http://127.0.0.1:5000/#/experiments/3/runs?viewStateShareKey=normlight&workflowType=machine_learning"
    )


def test_view_state_columns_sections_and_size():
    diag = {
        f"diag/{k}/l{i:02d}": 1.0 for k in ("grad_norm", "resid_rms", "attn_entropy", "massive_act") for i in range(12)
    }
    base = {
        "val/loss": 3.0,
        "val/ppl": 20.0,
        "summary/diverged": 0.0,
        "summary/best_val_loss": 3.0,
        "train/loss": 3.1,
        "lr": 1e-3,
        **diag,
    }
    runs = [
        _run(
            base,
            {"model.placement": p, "model.lr": lr, "seed_everything": s, "trainer.enable_progress_bar": "False"},
            {presentation.MAX_STABLE_LR_TAG: "1e-2"},
        )
        for p in ("pre", "post")
        for lr in ("0.001", "0.01")
        for s in ("0", "1")
    ]
    state = presentation.view_state(runs)
    assert state["selectedColumns"] == [
        "metrics.`val/loss`",
        "metrics.`val/ppl`",
        "metrics.`summary/diverged`",
        "tags.`max_stable_lr`",
        "params.`model.lr`",
        "params.`model.placement`",
        "params.`seed_everything`",
    ]
    names = [s["name"] for s in state["compareRunSections"]]
    assert names[:4] == ["val", "summary", "train", "Model metrics"] and set(names[4:]) == {
        "diag/grad_norm",
        "diag/resid_rms",
        "diag/attn_entropy",
        "diag/massive_act",
    }
    charts = {c["metricKey"]: c for c in state["compareRunCharts"]}
    assert charts["val/loss"]["type"] == "LINE" and charts["val/loss"]["metricSectionId"] == "normlight-val"
    assert not any(k.startswith("diag/") for k in charts)  # MLflow fills the diag sections itself
    assert len(json.dumps(state, separators=(",", ":"))) < 20000  # MLflow's limit for an experiment tag
