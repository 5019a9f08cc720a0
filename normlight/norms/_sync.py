"""Cross-rank reduction of batch statistics (synchronized batch-statistic norms).

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

import torch
import torch.distributed as dist


def active(sync_stats: bool, training: bool) -> bool:
    """True when statistics must be summed across ranks: enabled, training, and world size > 1."""
    return bool(sync_stats and training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1)


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
