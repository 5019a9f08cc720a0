"""Under DDP (2 CPU processes, gloo) throughput is summed over ranks into one metric on rank 0."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT

SCRIPT = textwrap.dedent("""
    import json, sys
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger
    from normlight.diagnostics import StabilityDiagnostics
    from tests.diagnostics.diag_tiny import LMTask, token_loader

    out = sys.argv[1]
    diag = StabilityDiagnostics(every_n_steps=2)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", devices=2, strategy="ddp", logger=CSVLogger(out),
                         callbacks=[diag], limit_val_batches=0, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(LMTask(), token_loader(n=128))
    rank = trainer.global_rank
    local = diag.meter.total_items / diag.meter.total_time
    logged = [m for _, m in diag.logged if "summary/tokens_per_sec" in m]
    json.dump({"local": local, "items": diag.meter.total_items,
               "summary": logged[-1]["summary/tokens_per_sec"] if logged else None},
              open(f"{out}/rank{rank}.json", "w"))
""")


@pytest.mark.distributed
def test_throughput_is_summed_over_ranks(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1"
    )
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["items"] == ranks[1]["items"] > 0  # each rank counted its own shard
    total = ranks[0]["local"] + ranks[1]["local"]
    assert ranks[0]["summary"] == pytest.approx(total, rel=1e-4)
    assert ranks[0]["summary"] > 1.2 * max(r["local"] for r in ranks)
