"""Synchronized batch statistics across 2 real gloo ranks equal one process on the full batch.

Launches tests/norms/_sync_worker.py twice (RANK 0 and 1, torchrun-style env) as subprocesses, so
ports and process groups never leak into the pytest process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_sync_worker.py")
EXPECTED = {"batchnorm", "batchnorm_masked", "batchnorm_2d", "powernorm", "unifiednorm", "bcn", "repbn", "evonorm_b0",
            "fsdp2_batchnorm"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.timeout(240)
def test_two_gloo_ranks_on_half_batches_match_full_batch():
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2",
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    procs = [subprocess.Popen([sys.executable, str(WORKER)], env=dict(env, RANK=str(r)), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in (0, 1)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=200))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    report = "\n".join(f"rank {r} rc={p.returncode}\n{o}\n{e[-3000:]}" for r, (p, (o, e)) in enumerate(zip(procs, outs)))
    results = [json.loads(line) for line in outs[0][0].splitlines() if line.startswith("{")]
    print(report)  # the measured max differences, shown with -s or on failure
    assert {r["case"] for r in results} == EXPECTED, report
    for r in results:
        assert r["ok"], f"{r['case']}: {r}"
        assert max(r["max_rel_diff"].values()) <= 1e-6
    assert all(p.returncode == 0 for p in procs), report
