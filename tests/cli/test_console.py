"""What a new user sees when a fit ends, as separate `normlight fit` processes on a fresh sqlite store.

- a short fit (3 steps, ``val_check_interval`` 100) still validates at its last step and prints one result
  line: val loss and perplexity (final and best), diverged or not, run name and a model-training UI link;
- the console is quiet by default (no Lightning tips, no LeafSpec deprecation, no FLOPs column, no MLflow
  schema lines) and ``--verbose`` brings Lightning's output back (checked in this process, while the
  quiet one runs as its own process);
- two identical fits started at the same moment write their checkpoints into two different folders.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from mlflow import MlflowClient

from tests.helpers import ROOT

SHORT = [
    "fit",
    "--config",
    str(ROOT / "configs/gpt/nano.yaml"),
    "--trainer.max_steps",
    "3",
    "--trainer.limit_val_batches",
    "2",
    "--model.sample_tokens",
    "4",
    "--diagnostics.every_n_steps",
    "2",
]
NOISE = ("Tip:", "LeafSpec", "FLOPs", "Creating initial MLflow database tables")


def _start(tmp_path, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(
        [sys.executable, "-m", "normlight", *SHORT, *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_short_fits_validate_print_a_result_line_and_keep_separate_checkpoints(
    tmp_path, empty_store_file, monkeypatch, capfd, one_thread
):
    """Two identical fits at once: a `normlight fit` process (default, quiet console) and, meanwhile, the same
    fit in this process with `--verbose` (Lightning's full model summary comes back)."""
    import shutil

    from normlight.cli import train

    shutil.copy(empty_store_file, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    proc = _start(tmp_path)
    assert train.main([*SHORT, "--verbose"]) == 0
    verbose = capfd.readouterr().out
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "Total FLOPs" in verbose  # --verbose: Lightning's own model summary is back
    for noise in NOISE:
        assert noise not in out, f"{noise!r} printed by default:\n{out}"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("gpt")
    assert len(client.search_runs([exp.experiment_id])) == 2
    for text in (out, verbose):
        (line,) = [ln for ln in text.splitlines() if " finished at step " in ln]
        m = re.search(
            r"normlight: (\S+) finished at step 3: val/loss ([\d.]+) \(best ([\d.]+)\), val/ppl ([\d.]+) "
            r"\(best [\d.]+\), not diverged; run (\w{8}): "
            r"http://127\.0\.0\.1:5000/#/experiments/(\d+)/runs\?viewStateShareKey=normlight&workflowType=machine_learning$",
            line,
        )
        assert m, line
        (run,) = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_id.startswith(m.group(5))]
        assert m.group(1) == run.info.run_name == "gpt-nano/pre/layernorm/lr3e-3/s0"
        assert m.group(6) == exp.experiment_id
        assert run.data.tags["mlflow.note.content"] == line.split("normlight: ", 1)[1].split("; run ")[0]
        # validated at the end although val_check_interval (100) was never reached; the line shows those numbers
        assert float(m.group(2)) == float(f"{run.data.metrics['val/loss']:.4g}")
        assert run.data.metrics["summary/final_val_loss"] == run.data.metrics["val/loss"]
        assert "summary/best_val_ppl" in run.data.metrics
    ckpts = sorted((tmp_path / "runs" / "checkpoints" / "gpt").glob("*/*/last.ckpt"))
    assert len(ckpts) == 2 and ckpts[0].parent != ckpts[1].parent, ckpts
    assert ckpts[0].parent.parent == ckpts[1].parent.parent  # one config folder: `--ckpt_path last` finds both
