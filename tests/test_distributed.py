"""normlight.distributed on 2 gloo ranks (plain torch.distributed, no Lightning), each case in subprocesses:

- synchronized batch statistics: every batch-statistic norm on half batches equals one process on the full
  batch (tests/workers/sync_worker.py, torchrun-style env);
- FSDP2 sharding per block: a sharded half-batch step equals one process on the full batch; refusals;
  aggregation helpers (tests/workers/fsdp2_worker.py under torchrun).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, free_port, torchrun
from tests.workers.fsdp2_worker import batch, build, loss_fn

WORKERS = ROOT / "tests" / "workers"
SYNC_CASES = {
    "batchnorm",
    "batchnorm_reference",
    "powernorm_reference",
    "batchnorm_masked",
    "batchnorm_2d",
    "powernorm",
    "unifiednorm",
    "bcn",
    "repbn",
    "evonorm_b0",
    "powernorm_reference",
    "unifiednorm_reference",
    "evonorm_b0_reference",
    "fsdp2_batchnorm",
}

pytestmark = pytest.mark.distributed

CASES = ["gpt-nano:layernorm", "gpt-nano:powernorm", "resnet20:batchnorm"]


def reference_step(model_name: str, norm: str):
    """One SGD step of the unsharded model on the whole batch in this (non-distributed) process."""
    model = build(model_name, norm)
    model.train()
    x, y = batch(model_name)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = loss_fn(model, x, y)
    loss.backward()
    opt.step()
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = {k: b.detach() for k, b in model.named_buffers() if "running" in k}
    return loss.item(), params, buffers


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp2")
    torchrun(WORKERS / "fsdp2_worker.py", out, *CASES, cwd=out)
    return out


def test_aggregation_helpers(launched):
    for rank in (0, 1):
        res = json.loads((launched / f"rank{rank}.json").read_text())
        assert res["world"] == 2
        assert res["gather"] == [1.0, 2.0]
        assert (res["sum"], res["max"], res["mean"]) == (3.0, 2.0, 1.5)


def test_refusals_are_clear(launched):
    res = json.loads((launched / "rank0.json").read_text())
    assert "tensor_parallel size 2" in res["tp_error"] and "tensor_parallel_size=1" in res["tp_error"]
    assert "sync_stats" in res["unsynced_error"] and "BatchNorm" in res["unsynced_error"]
    assert "ddp" in res["unsynced_error"]


@pytest.mark.parametrize("case", CASES)
def test_sharded_step_matches_full_batch(launched, case):
    model_name, norm = case.split(":")
    d = launched / case.replace(":", "-")
    r0, r1 = (json.loads((d / f"rank{r}.json").read_text()) for r in (0, 1))
    ranks = [torch.load(d / f"rank{r}.pt") for r in (0, 1)]
    # sharded per block: every parameter is a DTensor sharded on dim 0, each rank holds about half
    assert r0["all_dtensor"] and r0["all_shard0"]
    assert r0["fsdp_units"] == r0["n_blocks"] + 1
    assert r0["local_numel"] + r1["local_numel"] == r0["full_numel"]
    assert abs(r0["local_numel"] - r1["local_numel"]) < 0.1 * r0["full_numel"]
    assert r0["local_loss"] != r1["local_loss"]  # the ranks saw different halves

    ref_loss, ref_params, ref_buffers = reference_step(model_name, norm)
    assert r0["mean_loss"] == pytest.approx(ref_loss, rel=1e-5)
    assert set(ranks[0]["params"]) == set(ref_params)
    for k, ref in ref_params.items():
        torch.testing.assert_close(ranks[0]["params"][k], ref, rtol=1e-5, atol=1e-6, msg=lambda m: f"{case} {k}: {m}")
    assert set(ranks[0]["buffers"]) == set(ref_buffers)
    if norm in ("powernorm", "batchnorm"):
        assert ref_buffers, f"{case}: expected running statistics buffers"
    for k, ref in ref_buffers.items():  # running statistics: synced, so both ranks hold the full-batch values
        for r in (0, 1):
            torch.testing.assert_close(
                ranks[r]["buffers"][k], ref, rtol=1e-5, atol=1e-6, msg=lambda m: f"{case} rank{r} {k}: {m}"
            )


@pytest.mark.timeout(240)
def test_two_gloo_ranks_on_half_batches_match_full_batch():
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        WORLD_SIZE="2",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKERS / "sync_worker.py")],
            env=dict(env, RANK=str(r)),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for r in (0, 1)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=200))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    report = "\n".join(
        f"rank {r} rc={p.returncode}\n{o}\n{e[-3000:]}" for r, (p, (o, e)) in enumerate(zip(procs, outs))
    )
    results = [json.loads(line) for line in outs[0][0].splitlines() if line.startswith("{")]
    print(report)  # the measured max differences, shown with -s or on failure
    assert {r["case"] for r in results} == SYNC_CASES, report
    for r in results:
        assert r["ok"], f"{r['case']}: {r}"
        assert max(r["max_rel_diff"].values()) <= (1e-5 if r["case"] == "bcn" else 1e-6)  # see sync_worker.CASE_TOL
    assert all(p.returncode == 0 for p in procs), report
