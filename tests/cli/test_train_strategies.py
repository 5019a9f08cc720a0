"""Real ``normlight fit`` runs under Lightning strategies on 2 CPU processes (gloo), one launch per case.

Each launch composes a full config with a strategy fragment, adds the test-only RankProbe callback
(tests/workers/rank_probe.py) and trains a few steps into a fresh sqlite MLflow store in a tmp dir.
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, run_launch

pytestmark = pytest.mark.distributed

NORMLIGHT = Path(sys.executable).parent / "normlight"
SHORT = [
    "--trainer.accelerator",
    "cpu",
    "--trainer.max_steps",
    "4",
    "--trainer.val_check_interval",
    "2",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.log_every_n_steps",
    "1",
    "--diagnostics.every_n_steps",
    "2",
]


def fit(tmp: Path, configs: list[str], *extra: str) -> tuple[list[dict], list[dict], Path, str]:
    """Run one ``normlight fit`` launch in ``tmp``; return both ranks' probe records and states, the store and
    the launch's console output."""
    cmd = [
        NORMLIGHT,
        "fit",
        *(a for c in configs for a in ("-c", ROOT / c)),
        *SHORT,
        "--trainer.callbacks+=tests.workers.rank_probe.RankProbe",
        "--trainer.callbacks.out_dir",
        tmp / "probe",
        *extra,
    ]
    proc = run_launch(cmd, cwd=tmp, timeout=300)
    recs = [json.loads((tmp / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    states = [torch.load(tmp / "probe" / f"rank{r}.pt") for r in (0, 1)]
    return recs, states, tmp / "mlflow.db", proc.stdout + proc.stderr


def only_run(db: Path):
    """The single MLflow run in the store (fails if there is not exactly one)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1, f"expected exactly one MLflow run, found {len(runs)}: {[r.info.run_name for r in runs]}"
    return client, runs[0]


def assert_same_across_ranks(states, what: str, exact: bool = True):
    a, b = states[0][what], states[1][what]
    assert set(a) == set(b) and a
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), f"{what} {k} differs between ranks"
        else:
            torch.testing.assert_close(a[k], b[k], msg=lambda m: f"{what} {k}: {m}")


def check_data_parallel_run(recs, states, db, unit: str):
    """What every data-parallel run must satisfy, whatever the model."""
    assert [r["world_size"] for r in recs] == [2, 2] and [r["rank"] for r in recs] == [0, 1]
    assert all(r["global_step"] == 4 and len(r["local_loss"]) == 4 for r in recs)
    assert recs[0]["first_batch_sum"] != recs[1]["first_batch_sum"], "both ranks trained on the same samples"
    assert_same_across_ranks(states, "params")  # one model: gradients averaged, replicas in lockstep
    # every logged validation metric covers both ranks' shards (equal on both ranks, so rank 0 logs the truth)
    assert recs[0]["val"] and recs[0]["val"] == recs[1]["val"]
    client, run = only_run(db)
    metrics = run.data.metrics
    for key in ("train/loss", "val/loss", f"diag/{unit}_per_sec", f"summary/{unit}_per_sec"):
        assert key in metrics, f"{key} missing from the MLflow run; have {sorted(metrics)}"
    # train/loss is the loss of the global batch: the mean of the two ranks' micro-batch losses
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    for step, (l0, l1) in enumerate(zip(recs[0]["local_loss"], recs[1]["local_loss"])):
        assert history[step] == pytest.approx((l0 + l1) / 2, rel=1e-5), f"train/loss at step {step}"
    # throughput: all ranks summed into one number
    assert metrics[f"summary/{unit}_per_sec"] == pytest.approx(sum(r["items_per_sec"] for r in recs), rel=1e-6)
    return run


def test_ddp_gpt_nano_with_synced_powernorm(tmp_path):
    recs, states, db, out = fit(
        tmp_path,
        ["configs/gpt/nano.yaml", "configs/strategy/ddp.yaml"],
        "--model.norm",
        "powernorm",
        "--model.sample_tokens",
        "4",
    )
    assert recs[0]["strategy"] == "DDPStrategy"
    run = check_data_parallel_run(recs, states, db, "tokens")
    assert "val/ppl" in run.data.metrics
    assert "sync_dist" not in out, out  # validation metrics are logged synced: Lightning has nothing to warn about
    assert_same_across_ranks(states, "buffers")  # powernorm's running quadratic mean, synced across ranks


def test_ddp_resnet20_with_synced_batchnorm(tmp_path):
    recs, states, db, _ = fit(
        tmp_path,
        ["configs/resnet/resnet20.yaml", "configs/strategy/ddp.yaml"],
        "--trainer.max_epochs",
        "1",
        "--data.batch_size",
        "16",
    )
    assert recs[0]["strategy"] == "DDPStrategy"
    run = check_data_parallel_run(recs, states, db, "images")
    assert "val/acc1" in run.data.metrics
    assert_same_across_ranks(states, "buffers")  # batchnorm running mean/var, synced across ranks


def test_fsdp2_bf16_gpt_nano_with_synced_batchnorm(tmp_path):
    """FSDP2 via ModelParallelStrategy in bf16-mixed: parameters sharded per block as DTensors; batch-stat norms
    supported when synced."""
    recs, states, db, _ = fit(
        tmp_path,
        ["configs/gpt/nano.yaml", "configs/strategy/fsdp2.yaml", "configs/strategy/bf16.yaml"],
        "--model.norm",
        "batchnorm",
        "--model.sample_tokens",
        "4",
    )  # sampling runs on every rank (a sharded forward is collective)
    assert recs[0]["strategy"] == "ModelParallelStrategy" and recs[0]["precision"] == "bf16-mixed"
    for r in recs:
        assert all(r["param_is_dtensor"]), "some parameters were not sharded"
        assert r["fsdp_units"] == r["n_blocks"] + 1  # one unit per block plus the root
    assert recs[0]["local_numel"] + recs[1]["local_numel"] == recs[0]["full_numel"]
    check_data_parallel_run(recs, states, db, "tokens")
    assert_same_across_ranks(states, "buffers")  # buffers are not sharded; sync keeps the copies equal
    assert list((tmp_path / "runs" / "checkpoints").rglob("last.ckpt")), "no checkpoint was written under FSDP2"


@pytest.mark.slow
def test_ddp_diverging_run_ends_cleanly(tmp_path):
    """A run that diverges on 2 ranks stops on both (no hang), exits 0 and is recorded as diverged in one run."""
    cmd = [
        NORMLIGHT,
        "fit",
        "-c",
        ROOT / "configs/gpt/nano.yaml",
        "-c",
        ROOT / "configs/strategy/ddp.yaml",
        *SHORT,
        "--model.lr",
        "1e30",
        "--model.warmup_steps",
        "0",
        "--model.sample_tokens",
        "0",
        "--trainer.gradient_clip_val",
        "null",
    ]
    run_launch(cmd, cwd=tmp_path, timeout=300)
    _, run = only_run(tmp_path / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert run.data.tags["diverged"] == "true" and int(run.data.tags["diverged_step"]) < 4
