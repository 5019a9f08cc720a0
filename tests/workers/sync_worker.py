"""One rank of the synchronized-statistics check (run by tests/test_distributed.py, torchrun-style env).

Env: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT. Each rank normalizes its half of a batch with
``sync_stats=True`` and compares, step by step, with the same norm run in this process on the FULL
batch (``sync_stats=False``, so the reference takes no collective): outputs and input gradients of
its rows, parameter gradients summed over ranks, running statistics / backward EMAs, and the eval
output afterwards. A ghost-batch check confirms ``sync_stats=False`` keeps per-rank statistics.
Prints one JSON line per case (rank 0) and exits 1 if any difference exceeds 1e-6 (relative to
max(1, |reference|)).
"""

from __future__ import annotations

import datetime
import json
import os
import sys

import torch
import torch.distributed as dist

from normlight.norms.batchnorm import BatchNorm
from normlight.norms.bcn import BatchChannelNorm
from normlight.norms.evonorm import EvoNormB0
from normlight.norms.fast import set_fast_norms
from normlight.norms.powernorm import PowerNorm
from normlight.norms.repbn import RepBN
from normlight.norms.unifiednorm import UnifiedNorm

TOL = 1e-6
# BCN's GroupNorm stage amplifies ulp-level differences of its BatchNorm stage's output: the full-batch
# reference here (torch's native BatchNorm kernel) is itself 5e-6 from a float64 run on BCN's parameter
# gradients, so two fp32 implementations (it and the synced fast path) agree to ~1e-5, not 1e-6
CASE_TOL = {"bcn": 1e-5}
STEPS = 4

# name -> (factory(sync_stats), full-batch shape, channels_first, uses a padding mask, state buffers to compare)
CASES = {
    "batchnorm": (lambda s: BatchNorm(6, sync_stats=s), (4, 3, 6), False, False, ["running_mean", "running_var"]),
    "batchnorm_masked": (lambda s: BatchNorm(6, sync_stats=s), (4, 5, 6), False, True, ["running_mean", "running_var"]),
    "batchnorm_2d": (
        lambda s: BatchNorm(5, layout="channels_first", sync_stats=s),
        (4, 5, 3, 3),
        True,
        False,
        ["running_mean", "running_var"],
    ),
    "powernorm": (
        lambda s: PowerNorm(6, group_num=2, warmup_iters=2, sync_stats=s),
        (4, 3, 6),
        False,
        True,
        ["running_phi", "ema_gz"],
    ),
    "unifiednorm": (
        lambda s: UnifiedNorm(6, window_size=2, warmup_iters=0, sync_stats=s),
        (4, 3, 6),
        False,
        True,
        ["running_var", "ema_gz", "buffer_x2", "buffer_gz"],
    ),
    "bcn": (
        lambda s: BatchChannelNorm(4, num_groups=2, layout="channels_first", sync_stats=s),
        (4, 4, 2, 2),
        True,
        False,
        ["bn.running_mean", "bn.running_var"],
    ),
    "repbn": (lambda s: RepBN(6, sync_stats=s), (4, 3, 6), False, False, ["bn.running_mean", "bn.running_var"]),
    "evonorm_b0": (lambda s: EvoNormB0(6, sync_stats=s), (4, 3, 6), False, False, ["running_var"]),
    # the reference code (fast paths off): its own all-reduces (_batchstats.moments / quadratic_mean)
    "batchnorm_reference": (
        lambda s: reference(BatchNorm(6, sync_stats=s)),
        (4, 5, 6),
        False,
        True,
        ["running_mean", "running_var"],
    ),
    "powernorm_reference": (
        lambda s: reference(PowerNorm(6, group_num=2, warmup_iters=2, sync_stats=s)),
        (4, 3, 6),
        False,
        True,
        ["running_phi", "ema_gz"],
    ),
}
# the reference code (fast paths off) of the norms whose training step has its own sync calls there
for _name in ("powernorm", "unifiednorm", "evonorm_b0"):
    _make = CASES[_name][0]
    CASES[f"{_name}_reference"] = (
        lambda s, make=_make: (m := make(s), set_fast_norms(m, False))[0],
        *CASES[_name][1:],
    )


def reference(m: torch.nn.Module) -> torch.nn.Module:
    """``m`` on its reference code (fast paths off)."""
    set_fast_norms(m, False)
    return m


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(1, max |b|)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def buffer(m: torch.nn.Module, dotted: str) -> torch.Tensor:
    """A (possibly nested) buffer by dotted name."""
    for part in dotted.split("."):
        m = getattr(m, part)
    return m


def run_case(name: str, rank: int, world: int) -> dict:
    """Run one norm synced on half batches vs. the full batch locally; return the max relative diffs."""
    factory, shape, channels_first, masked, buffers = CASES[name]
    torch.manual_seed(0)
    ref, dut, ghost = factory(False), factory(True), factory(False)
    with torch.no_grad():  # non-trivial affine parameters, identical in all three copies
        for p in ref.parameters():
            p.copy_(torch.rand(p.shape) + 0.5)
        dut.load_state_dict(ref.state_dict()), ghost.load_state_dict(ref.state_dict())
    half = shape[0] // world
    rows = slice(rank * half, (rank + 1) * half)
    diffs = {"out": 0.0, "dx": 0.0, "dparam": 0.0, "state": 0.0, "eval": 0.0}
    ghost_diff = 0.0
    for step in range(STEPS):
        g = torch.Generator().manual_seed(100 + step)
        x = torch.randn(shape, generator=g) * (1 + step) + 0.5 * step
        dy = torch.randn(shape, generator=g)
        mask = None
        if masked:
            mask = torch.rand(shape[:-1], generator=g) > 0.3
            mask[:, 0] = True
        xr, xd = x.clone().requires_grad_(), x[rows].clone().requires_grad_()
        yr = ref(xr, mask=mask) if masked else ref(xr)
        yd = dut(xd, mask=mask[rows]) if masked else dut(xd)
        (yr * dy).sum().backward()
        (yd * dy[rows]).sum().backward()
        diffs["out"] = max(diffs["out"], rel_diff(yd, yr[rows]))
        diffs["dx"] = max(diffs["dx"], rel_diff(xd.grad, xr.grad[rows]))
        for (pn, pr), pd in zip(ref.named_parameters(), dut.parameters()):
            total = pd.grad.clone()
            dist.all_reduce(total)  # what DDP does (as a sum) with the per-rank parameter gradients
            diffs["dparam"] = max(diffs["dparam"], rel_diff(total, pr.grad))
            pr.grad, pd.grad = None, None
        for b in buffers:
            diffs["state"] = max(diffs["state"], rel_diff(buffer(dut, b), buffer(ref, b)))
        with torch.no_grad():
            yg = ghost(x[rows], mask=mask[rows]) if masked else ghost(x[rows])
            ghost_diff = max(ghost_diff, rel_diff(yg, yr[rows].detach()))
    ref.eval(), dut.eval()
    with torch.no_grad():
        x = torch.randn(shape, generator=torch.Generator().manual_seed(999))
        diffs["eval"] = rel_diff(dut(x[rows]), ref(x)[rows])
    ok = all(v <= CASE_TOL.get(name, TOL) for v in diffs.values()) and ghost_diff > 1e-3
    return {"case": name, "ok": ok, "max_rel_diff": diffs, "ghost_batch_diff": ghost_diff}


def run_fsdp2_case(rank: int, world: int) -> dict:
    """A Linear-BatchNorm-Linear model under FSDP2 (``fully_shard``) on half batches vs. full batch locally.

    FSDP2 shards the parameters (dim 0) but not the BatchNorm buffers; the synced statistics make
    outputs, running statistics and the (averaged, then x world) gradients match the full batch.
    Run in float64: this case checks the sharded data flow, not float32 rounding through two Linears.
    """
    from torch import nn
    from torch.distributed.fsdp import fully_shard

    def build(sync: bool) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 8), BatchNorm(8, sync_stats=sync), nn.Linear(8, 4)).double()

    ref, dut = build(False), build(True)
    fully_shard(dut)
    half = 16 // world
    rows = slice(rank * half, (rank + 1) * half)
    diffs = {"out": 0.0, "dparam": 0.0, "state": 0.0, "eval": 0.0}
    for step in range(STEPS):
        g = torch.Generator().manual_seed(300 + step)
        x = torch.randn(16, 6, generator=g, dtype=torch.float64) * (1 + step)
        dy = torch.randn(16, 4, generator=g, dtype=torch.float64)
        yr, yd = ref(x), dut(x[rows])
        (yr * dy).sum().backward()
        (yd * dy[rows]).sum().backward()
        diffs["out"] = max(diffs["out"], rel_diff(yd, yr[rows]))
        for pr, pd in zip(ref.parameters(), dut.parameters()):
            # FSDP2 reduce-scatters the MEAN over ranks; the full-batch sum loss is world x that
            diffs["dparam"] = max(diffs["dparam"], rel_diff(pd.grad.full_tensor() * world, pr.grad))
            pr.grad, pd.grad = None, None
        for b in ("1.running_mean", "1.running_var"):
            diffs["state"] = max(diffs["state"], rel_diff(buffer(dut, b), buffer(ref, b)))
    ref.eval(), dut.eval()
    with torch.no_grad():
        x = torch.randn(16, 6, generator=torch.Generator().manual_seed(999), dtype=torch.float64)
        diffs["eval"] = rel_diff(dut(x[rows]), ref(x)[rows])
    return {"case": "fsdp2_batchnorm", "ok": all(v <= TOL for v in diffs.values()), "max_rel_diff": diffs}


def main() -> int:
    """Join the gloo group from the env, run every case, report from rank 0."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    torch.set_num_threads(1)
    failed = False
    try:
        for name in [*CASES, "fsdp2_batchnorm"]:
            result = run_fsdp2_case(rank, world) if name == "fsdp2_batchnorm" else run_case(name, rank, world)
            failed |= not result["ok"]
            if rank == 0:
                print(json.dumps(result), flush=True)
    finally:
        dist.barrier()  # no rank tears the group down while the other still talks to it
        dist.destroy_process_group()
    return 1 if failed else 0


def exit_now(code: int) -> None:
    """Leave without interpreter finalization once the group is destroyed on every rank.

    fully_shard keeps the FSDP module (and the gloo process group it holds) alive to the end of the process, so
    without this the group's C++ threads are torn down during finalization, in no fixed order and after the
    peer may have gone: now and then that ended in std::terminate (rc -6) after every case had passed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
