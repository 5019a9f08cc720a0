"""Distributed helpers: cross-rank batch statistics, FSDP2 sharding and per-rank aggregation.

normlight launches nothing itself: DDP, FSDP and FSDP2 come from Lightning (see configs/strategy/ and
docs/scale-out.md). This module holds the small pieces Lightning leaves to the model owner:

- synchronized batch statistics for batch-statistic norms (``sync_active``, ``all_reduce_sum``; the
  rules are below);
- ``fsdp2_shard(model, device_mesh)``: apply ``torch.distributed.fsdp.fully_shard`` to every residual
  block and then to the root (what ``ModelParallelStrategy`` expects ``configure_model()`` to do);
- the batch-statistic rule under FSDP: a norm with ``uses_batch_statistics`` is supported only when it
  synchronizes its statistics across the data-parallel ranks (``sync_stats=True``, the default of the
  built-ins). FSDP shards parameters, not buffers, and never broadcasts buffers the way DDP does, so an
  unsynced norm would let every rank drift to its own running statistics; that case is refused;
- ``aggregate`` / ``gather``: reduce a per-rank Python number (throughput, peak memory) into one value,
  a no-op when ``torch.distributed`` is not initialized.

Synchronized batch statistics
-----------------------------
Under data parallelism every rank sees only its share of the batch. A batch-statistic norm built
with ``sync_stats=True`` (the default) sums its per-channel sums and counts over all ranks of the
default process group before normalizing, so N ranks on batches of B/N give the same outputs,
gradients and running statistics as one process on the whole batch of B. The forward sums go
through a differentiable all-reduce whose backward is again an all-reduce (sum) of the incoming
gradients, so gradients are exact (each rank receives the gradient that the other ranks'
losses send through the shared statistic). ``sync_stats=False`` keeps per-rank ("ghost batch")
statistics.

When is a statistic reduced? Only in training mode, only when ``torch.distributed`` is initialized
with a world size above 1. Eval uses running estimates, which are identical on every rank because
every rank applied the same reduced updates.

FSDP / FSDP2: running statistics are *buffers* and FSDP does not shard buffers; every rank keeps a
full copy. The reduction here still all-reduces over the default (world) process group, which under
FSDP is also the data-parallel group, so the statistics cover the global batch and the buffers stay
identical across ranks. With hybrid or tensor-parallel meshes (several process groups) the world
group is not the data-parallel group; that combination is not supported here.

What "batch" a norm sees: one forward call. With gradient accumulation over k micro-batches each
micro-batch is normalized with its own statistics (times the number of ranks when synced), the
running estimates are updated k times per optimizer step, and step counters (PowerNorm's warmup,
UN's window, PRepBN's schedule) advance k times per optimizer step. Accumulation therefore does
NOT enlarge the statistics' batch; to study a larger statistics batch, raise the per-step batch.

Every rank must run the same norms in the same order (collectives are matched by order), which
holds for ordinary data-parallel training.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from normlight.errors import NormlightError

FSDP2_CONFIG_HINT = (
    "use ModelParallelStrategy(data_parallel_size=<nodes x devices>, tensor_parallel_size=1) "
    "as in configs/strategy/fsdp2.yaml"
)


def batch_stat_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(qualified_name, module)`` for every module that normalizes with batch statistics."""
    for name, module in model.named_modules():
        if getattr(module, "uses_batch_statistics", False):
            yield name, module


def data_parallel_mesh(device_mesh):
    """Return the data-parallel part of a device mesh, refusing tensor parallelism normlight does not implement.

    Accepts a 1-D mesh as is, or Lightning's 2-D ``("data_parallel", "tensor_parallel")`` mesh with a
    tensor-parallel size of 1.
    """
    if device_mesh is None:
        raise NormlightError(f"fsdp2_shard needs a device mesh (got None); {FSDP2_CONFIG_HINT}.")
    names = tuple(device_mesh.mesh_dim_names or ())
    if "tensor_parallel" in names and device_mesh["tensor_parallel"].size() > 1:
        raise NormlightError(
            f"the device mesh has tensor_parallel size {device_mesh['tensor_parallel'].size()}, but normlight "
            f"models implement no tensor parallelism (ranks of one tensor-parallel group would see the same data); "
            f"{FSDP2_CONFIG_HINT}."
        )
    if "data_parallel" in names:
        return device_mesh["data_parallel"]
    if device_mesh.ndim == 1:
        return device_mesh
    raise NormlightError(
        f"cannot find the data-parallel dimension of a device mesh with dims {names}; {FSDP2_CONFIG_HINT}."
    )


def check_batch_stat_norms_for_fsdp(model: nn.Module) -> None:
    """Raise a clear error for any batch-statistic norm that would not synchronize its statistics under FSDP."""
    for name, module in batch_stat_modules(model):
        if getattr(module, "sync_stats", False) is not True:
            raise NormlightError(
                f"'{name}' ({type(module).__name__}) normalizes with batch statistics but does not synchronize them "
                f"across ranks (sync_stats={getattr(module, 'sync_stats', 'not supported')}). Under FSDP each rank "
                f"would keep its own running statistics, so evaluation and checkpoints would depend on the rank. "
                f"Use sync_stats=True (e.g. --model.norm_kwargs '{{sync_stats: true}}'), or run per-rank "
                f"('ghost batch') statistics under the ddp strategy, which broadcasts rank 0's buffers."
            )


def fsdp2_shard(
    model: nn.Module, device_mesh, *, mp_policy=None, reshard_after_forward: bool | None = None
) -> nn.Module:
    """Shard ``model`` with FSDP2: ``fully_shard`` on each of ``model.blocks`` in depth order, then on the root.

    Call it from ``LightningModule.configure_model()`` under ``ModelParallelStrategy`` (the task base
    class does). Calling it again on an already sharded model does nothing, because Lightning runs
    ``configure_model`` once per stage. ``mp_policy`` is an optional
    ``torch.distributed.fsdp.MixedPrecisionPolicy``; ``precision: bf16-mixed`` already works without it.
    Embeddings, the final norm and the head stay in the root unit, so tied weights stay together.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return model
    mesh = data_parallel_mesh(device_mesh)
    if mesh.size() > 1:
        check_batch_stat_norms_for_fsdp(model)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise NormlightError(
            f"{type(model).__name__} has no 'blocks' attribute, so it cannot be sharded per block; normlight "
            f"models expose their residual blocks as model.blocks."
        )
    # reshard_after_forward=None is torch's default: free block parameters after forward, keep the root's.
    kwargs = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    if mp_policy is not None:
        kwargs["mp_policy"] = mp_policy
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _reduce_device(group=None) -> torch.device:
    # NCCL reduces only CUDA tensors; every other backend (gloo) takes CPU tensors.
    if torch.distributed.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def distributed_ready() -> bool:
    """True when ``torch.distributed`` is initialized with more than one rank."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def gather(value: float, group=None) -> list[float]:
    """All ranks' values of a per-rank number, in rank order (``[value]`` when not distributed). Collective."""
    if not distributed_ready():
        return [float(value)]
    n = torch.distributed.get_world_size(group)
    local = torch.tensor([float(value)], dtype=torch.float64, device=_reduce_device(group))
    out = [torch.zeros_like(local) for _ in range(n)]
    torch.distributed.all_gather(out, local, group=group)
    return [float(t.item()) for t in out]


def aggregate(value: float, op: str = "mean", group=None) -> float:
    """Reduce a per-rank number over ranks: ``op`` in sum (throughput), mean, max (peak memory), min. Collective."""
    reducers = {"sum": sum, "mean": lambda v: sum(v) / len(v), "max": max, "min": min}
    if op not in reducers:
        raise NormlightError(f"unknown aggregation op {op!r}; choose one of {sorted(reducers)}")
    return float(reducers[op](gather(value, group)))


# ---- synchronized batch statistics -------------------------------------------------------------
def sync_active(sync_stats: bool, training: bool) -> bool:
    """True when statistics must be summed across ranks: enabled, training, and world size > 1."""
    return bool(sync_stats and training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


class _AllReduceSum(torch.autograd.Function):
    # d(sum_r s_r)/d(s_q) = 1 for every rank q, and every rank's loss reads the sum: the gradient
    # reaching s_q is the sum over ranks of the gradients of the reduced tensor
    @staticmethod
    def forward(ctx, t):
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over all ranks of the default group (gradients are summed back)."""
    return _AllReduceSum.apply(t)


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """In-place, non-differentiable sum over all ranks (for use inside custom autograd Functions)."""
    dist.all_reduce(t)
    return t
