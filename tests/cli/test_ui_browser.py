"""The MLflow UI as a new user meets it, in a real headless Chromium against `normlight ui` (skipped, with the
reason, where no browser is installed).

The store (tests/cli/ui_store.py) holds a sweep of four runs under its parent run and a `normlight compare`
of it, and is MOVED to another folder before the UI starts (artifacts must follow the store). Checked:

- `normlight ui` prints, and `--open` opens, the experiment's runs in the model-training view (MLflow 3.x
  otherwise opens its GenAI overview) with the `normlight` view;
- that view shows val/loss, val/ppl, summary/diverged, max_stable_lr and the varying params without clicking;
  the comparison run is not in the table; the sweep's runs are folded under their parent;
- the chart view lists the val, summary and train sections before diag;
- artifacts of the moved project are served from its own mlartifacts/.
"""

from __future__ import annotations

import json
import shutil
import signal
import urllib.request

import pytest
from mlflow import MlflowClient

from normlight.tracking.ui import ui_link
from tests import browser
from tests.cli import ui_store


@pytest.fixture
def moved_store(tmp_path, empty_store_file):
    if browser.missing():
        pytest.skip(browser.missing())
    ui_store.build(tmp_path / "project", empty_store_file)
    shutil.copytree(tmp_path / "project", tmp_path / "moved")
    shutil.rmtree(tmp_path / "project")
    return tmp_path / "moved"


def test_ui_shows_the_comparison_without_clicking(moved_store, tmp_path, start_mlflow_server):
    from selenium.webdriver.common.by import By

    uri = f"sqlite:///{moved_store / 'mlflow.db'}"
    opener = tmp_path / "browser.sh"  # stands in for the desktop browser `--open` launches
    opener.write_text(f'#!/bin/sh\necho "$1" > {tmp_path / "opened.txt"}\n')
    opener.chmod(0o755)
    base, proc = start_mlflow_server(uri, moved_store, "--open", env_extra={"BROWSER": f"{opener} %s"})
    port = int(base.rsplit(":", 1)[1])
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(ui_store.EXPERIMENT)
    link = ui_link(exp.experiment_id, port=port, view=True)
    assert link.endswith("/runs?viewStateShareKey=normlight&workflowType=machine_learning")

    with browser.chromium() as d:
        d.get(f"{base}/#/experiments/{exp.experiment_id}")  # no parameter: MLflow's GenAI overview
        browser.wait_for_text(d, "Token Usage")
        d.get(link)
        body = browser.wait_for_text(d, "summary/diverged")
        header = body.split("Run Name", 1)[-1]
        for column in ("val/loss", "val/ppl", "summary/diverged", "model.placement", "model.lr"):
            assert column in header, f"{column} not shown without clicking:\n{body}"
        assert "Token Usage" not in body and "compare/" not in body  # comparison runs have their own experiment
        assert "sweep/demo" in body and "demo/pre/lr=0.001" not in body  # folded under the parent
        browser.close_assistant(d)
        d.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
        body = browser.wait_for_text(d, "demo/pre/lr=0.001")
        body = browser.wait_for_text(d, "max_stable_lr")  # MLflow shows tag columns of the rows in view
        assert all(f"demo/{p}/lr={lr}" in body for p in ui_store.PLACEMENTS for lr in ui_store.LRS)
        d.find_element(By.XPATH, "//input[@name='runs-view-mode' and @value='CHART']/ancestor::label[1]").click()
        body = browser.wait_for_text(d, "Add section")
        order = [body.index(f"\n{s}\n(") for s in ("val", "summary", "train", "diag")]
        assert order == sorted(order), body

    # the moved project's artifacts are served from its own mlartifacts/ (the original folder is gone)
    child = client.search_runs([exp.experiment_id], filter_string="tags.placement = 'pre'")[0]
    url = f"{base}/get-artifact?path=config.yaml&run_uuid={child.info.run_id}"
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.read().decode() == "model: {placement: pre}\n"
    req = urllib.request.Request(
        f"{base}/api/2.0/mlflow/experiments/get?experiment_id={exp.experiment_id}", method="GET"
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert json.load(r)["experiment"]["artifact_location"] == "mlflow-artifacts:/"

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert f"{ui_store.EXPERIMENT}: {link}" in out, out  # the printed link is the one that works
    assert (tmp_path / "opened.txt").read_text().strip() == link  # --open opens it


@pytest.mark.slow
def test_readme_screenshots(tmp_path, start_mlflow_server, monkeypatch):
    """Regenerates docs/img/mlflow_runs.png and docs/img/mlflow_charts.png from real runs: a reduced
    placement x LR x seed sweep (12 gpt-nano runs of 60 steps), `normlight compare`, then `normlight ui` in
    headless Chromium. Run: .venv/bin/python -m pytest -m slow tests/cli/test_ui_browser.py -k screenshots"""
    import time

    from selenium.webdriver.common.by import By

    from normlight.cli import compare as compare_cli
    from normlight.cli import sweep as sweep_cli
    from tests.helpers import ROOT
    from tests.sweep.helpers import reduced_sweep

    if browser.missing():
        pytest.skip(browser.missing())
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = reduced_sweep(
        ROOT / "configs" / "sweeps" / "placement_lr_quick.yaml",
        tmp_path,
        grid={"model.placement": ["pre", "post", "peri"], "model.lr": [1e-3, 1e-2], "seed_everything": [0, 1]},
        fixed={
            "trainer.max_steps": 60,
            "trainer.val_check_interval": 20,
            "trainer.limit_val_batches": 4,
            "diagnostics.every_n_steps": 10,
        },
    )
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", uri, "--workers", "2"]) == 0
    assert compare_cli.main(["compare", "--experiment", "placement-lr-quick", "--tracking-uri", uri]) == 0
    base, _ = start_mlflow_server(uri, tmp_path)
    exp = MlflowClient(uri).get_experiment_by_name("placement-lr-quick")
    out = ROOT / "docs" / "img"
    with browser.chromium() as d:
        d.set_window_size(1500, 1000)
        d.get(ui_link(exp.experiment_id, port=int(base.rsplit(":", 1)[1]), view=True))
        browser.wait_for_text(d, "summary/diverged")
        browser.close_assistant(d)
        for hide in d.find_elements(By.CSS_SELECTOR, "button[aria-label='Hide banner']"):
            hide.click()
        d.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
        browser.wait_for_text(d, "max_stable_lr")
        d.save_screenshot(str(out / "mlflow_runs.png"))
        d.find_element(By.XPATH, "//input[@name='runs-view-mode' and @value='CHART']/ancestor::label[1]").click()
        browser.wait_for_text(d, "Add section")
        time.sleep(3)  # let the line charts draw
        d.save_screenshot(str(out / "mlflow_charts.png"))
