"""2-rank worker for tests/test_distributed.py, launched with ``torchrun --nproc_per_node 2``.

Plain torch.distributed on gloo (no Lightning): checks normlight.distributed.fsdp2_shard and the per-rank
aggregation helpers, runs one sharded SGD step of a real normlight model on half batches, and writes
what the parent test compares against its own single-process full-batch step.
Usage: fsdp2_worker.py OUT_DIR MODEL:NORM [MODEL:NORM ...]
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard

import normlight
from normlight import distributed as scale
from normlight.errors import NormlightError


def build(model_name: str, norm: str, **norm_kwargs):
    """The model both this worker and the parent build from the same seed."""
    torch.manual_seed(0)
    return normlight.create_model(model_name, norm=norm, norm_kwargs=norm_kwargs or None)


def batch(model_name: str):
    """A fixed full batch (inputs, targets) for the model family."""
    g = torch.Generator().manual_seed(1)
    if model_name.startswith("gpt"):
        idx = torch.randint(0, 256, (8, 33), generator=g)
        return idx[:, :-1], idx[:, 1:]
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)


def loss_fn(model, x, y):
    """Mean cross-entropy for either family."""
    logits = model(x)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def main(out: Path, cases: list[str]) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    res = {"rank": rank, "world": world}
    model_name, norm = cases[0].split(":")

    # aggregation helpers
    res["gather"] = scale.gather(rank + 1.0)
    res["sum"], res["max"], res["mean"] = (scale.aggregate(rank + 1.0, op) for op in ("sum", "max", "mean"))

    # refusals: tensor parallelism, and per-rank batch statistics under FSDP
    try:
        scale.fsdp2_shard(
            build(model_name, norm),
            init_device_mesh("cpu", (1, world), mesh_dim_names=("data_parallel", "tensor_parallel")),
        )
    except NormlightError as e:
        res["tp_error"] = str(e)
    try:
        scale.fsdp2_shard(build(model_name, "batchnorm", sync_stats=False), init_device_mesh("cpu", (world,)))
    except NormlightError as e:
        res["unsynced_error"] = str(e)

    (out / f"rank{rank}.json").write_text(json.dumps(res))
    for case in cases:
        sharded_step(out / case.replace(":", "-"), *case.split(":"), rank, world)
    dist.barrier()
    dist.destroy_process_group()


def sharded_step(out: Path, model_name: str, norm: str, rank: int, world: int) -> None:
    """One FSDP2 SGD step on this rank's half of the batch, on Lightning's 2-D mesh layout."""
    out.mkdir(exist_ok=True)
    res = {}
    model = build(model_name, norm)
    mesh = init_device_mesh("cpu", (world, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    scale.fsdp2_shard(model, mesh)
    scale.fsdp2_shard(model, mesh)  # idempotent, as configure_model runs once per stage
    params = dict(model.named_parameters())
    res["n_params"] = len(params)
    res["all_dtensor"] = all(isinstance(p, DTensor) for p in params.values())
    res["all_shard0"] = all(p.placements == (Shard(0),) for p in params.values() if isinstance(p, DTensor))
    res["local_numel"] = sum(p.to_local().numel() for p in params.values())
    res["full_numel"] = sum(p.numel() for p in params.values())
    res["fsdp_units"] = sum(type(m).__name__.startswith("FSDP") for m in model.modules())
    res["n_blocks"] = len(list(model.blocks))

    x, y = batch(model_name)
    half = x.shape[0] // world
    x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loss = loss_fn(model, x, y)
    loss.backward()
    opt.step()
    res["local_loss"] = loss.item()
    res["mean_loss"] = scale.aggregate(loss.item(), "mean")

    full = {k: p.full_tensor().detach() for k, p in model.named_parameters()}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers() if "running" in k}
    torch.save({"params": full, "buffers": buffers}, out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
