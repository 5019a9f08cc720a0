"""RepBN and the progressive LayerNorm -> RepBN schedule (PRepBN) of SLAB (Guo et al., ICML 2024).

RepBN: ``y = BN(x) + alpha * x`` with BatchNorm over batch x tokens per channel and a learnable
scalar ``alpha`` (init 1). At inference it is one per-channel affine (``inference_affine``), which is
why it can be folded into the neighbouring linear layer.

PRepBN (the paper's ``LinearNorm``): in training, after ``warm`` forward calls of pure
LayerNorm, ``y = lambda * LN(x) + (1 - lambda) * RepBN(x)`` with ``lambda = r0 * iter / total_steps``
decreasing linearly from ``r0`` to 0 as ``iter`` counts down from ``total_steps``. Eval is always
RepBN, even mid-schedule. The counters advance once per *training forward call*, not per optimizer
step (with gradient accumulation over k micro-batches, k per step).

Schedule: the paper takes lambda from 1 at the start of training to 0 at its end, so that the trained
network is the pure RepBN one it evaluates. When the build context knows the run's length
(``total_steps``, in training forward calls) the blend spans it; otherwise ``total_steps`` falls back to
60000, the value of SLAB's DeiT/Swin recipes (their ImageNet runs are about 375,000 iterations per GPU;
``LinearNorm``'s own default, 300000, covers about 80% of them). A fixed 60000 in a run of a few hundred
steps would leave lambda near 1: training as LayerNorm, evaluating as RepBN. Explicit values always win.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normlight import distributed
from normlight.norms import _batchstats as bs
from normlight.norms import fast
from normlight.norms.batchnorm import BatchNorm


class RepBN(bs.InnerBatchStats, nn.Module):
    """``BN(x) + alpha * x``; BatchNorm options ``eps``, ``momentum``, ``sync_stats`` as in ``batchnorm``.

    ``batch_stat`` / ``running_stat`` are the inner BatchNorm's batch and running variance.
    """

    uses_batch_statistics = True
    description = "RepBN: BatchNorm plus a learnable scaled identity (alpha init 1), foldable at inference"
    paper = "Guo et al. 2024, SLAB: Efficient Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch Normalization"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        sync_stats: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, device=device, dtype=dtype))
        self.bn = BatchNorm(num_features, eps=eps, momentum=momentum, sync_stats=sync_stats, device=device, dtype=dtype)
        self.bn.label = "repbn"  # errors name this norm, not its BatchNorm

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``BN(x) + alpha * x`` over ``(..., C)``; ``mask`` keeps padded tokens out of the BN statistics."""
        xf = x.to(bs.stat_dtype(x))  # float32 for half inputs, cast back once at the end
        if fast.on(self):
            return self._fast(xf, mask).to(x.dtype)
        return (self.bn(xf, mask=mask) + self.alpha.to(xf.dtype) * xf).to(x.dtype)

    def _fast(self, xf: torch.Tensor, mask: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        # ``scale * (BN(x) + alpha * x)`` as one affine pass per row: batch statistics in training,
        # the folded running statistics in eval (PRepBN passes its blend weight as ``scale``)
        # (the inner BatchNorm is always affine); a wrong input or mask is reported in eval too
        bn, dt = self.bn, xf.dtype
        w, b, a = (t.to(dt) * scale for t in (bn.weight, bn.bias, self.alpha))
        mask = bs.check_input(bn.label, xf, bn.num_features, mask)
        if self.training:
            return bn._fast_batch(xf, mask, distributed.sync_active(bn.sync_stats, True), w, b, a)
        inv = torch.rsqrt(bn.running_var.to(dt) + bn.eps) * w
        return torch.addcmul(b - bn.running_mean.to(dt) * inv, xf, inv + a)

    def inference_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(scale, shift)`` with ``eval(x) == x * scale + shift`` (the re-parameterized form)."""
        bn = self.bn
        inv = torch.rsqrt(bn.running_var + bn.eps) * bn.weight
        return inv + self.alpha, bn.bias - bn.running_mean * inv


class PRepBN(bs.InnerBatchStats, nn.Module):
    """Progressive LayerNorm -> RepBN (options ``total_steps``, ``warm``, ``r0``, ``ln_eps``, BN ``eps``, ``momentum``).

    ::

        training, warm > 0 :  x --LN--> y                                   (warm -= 1)
        training, warm == 0:  x --LN-----*lambda-------+--> y               (iter -= 1 while > 0)
                              x --RepBN--*(1-lambda)---+        lambda = r0 * iter / total_steps
        eval               :  x --RepBN--> y
    """

    stats_module = "norm2"  # statistics of the RepBN branch

    uses_batch_statistics = True
    description = "PRepBN: LayerNorm blended into RepBN linearly over training forward calls (SLAB)"
    paper = RepBN.paper

    def __init__(
        self,
        num_features: int,
        total_steps: int | None = None,
        warm: int = 0,
        r0: float = 1.0,
        ln_eps: float = 1e-6,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        sync_stats: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if total_steps is None:  # no schedule in the build context: SLAB's DeiT/Swin value
            total_steps = 60000
        if total_steps < 1 or warm < 0:
            raise ValueError(f"prepbn: total_steps must be >= 1 and warm >= 0, got {total_steps}, {warm}")
        self.r0 = r0
        self.norm1 = nn.LayerNorm(num_features, eps=ln_eps, device=device, dtype=dtype)
        self.norm2 = RepBN(num_features, eps=eps, momentum=momentum, sync_stats=sync_stats, device=device, dtype=dtype)
        self.norm2.bn.label = "prepbn"
        self.register_buffer("warm", torch.tensor(warm, dtype=torch.long, device=device))
        self.register_buffer("iter", torch.tensor(total_steps, dtype=torch.long, device=device))
        self.register_buffer("total_step", torch.tensor(total_steps, dtype=torch.long, device=device))

    def resolved_options(self) -> dict:
        """The blend length (from the run's schedule when the build context had it), for the run record."""
        return {"total_steps": int(self.total_step)}

    def extra_repr(self) -> str:
        """Schedule state shown in ``print(module)``."""
        return f"r0={self.r0}, warm={int(self.warm)}, iter={int(self.iter)}, total_step={int(self.total_step)}"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Blend LN and RepBN by the schedule in training; RepBN in eval (see the class diagram)."""
        if not self.training:
            return self.norm2(x, mask=mask)
        if int(self.warm) > 0:
            self.warm.sub_(1)
            return self._layer_norm(x.to(bs.stat_dtype(x))).to(x.dtype)
        lam = self.r0 * float(self.iter) / float(self.total_step)
        if int(self.iter) > 0:
            self.iter.sub_(1)
        xf = x.to(bs.stat_dtype(x))
        if fast.on(self):  # the blend weights folded into each branch's affine parameters
            ln = self.norm1
            w, b = ln.weight.to(xf.dtype) * lam, ln.bias.to(xf.dtype) * lam
            # accumulate into the LN output (a fresh tensor): adding in place into the RepBN output, a
            # view of a custom Function's output, costs autograd four full-size copies (CopySlices)
            y = F.layer_norm(xf, ln.normalized_shape, w, b, ln.eps)
            return y.add_(self.norm2._fast(xf, mask, 1 - lam)).to(x.dtype)
        return (lam * self._layer_norm(xf) + (1 - lam) * self.norm2(xf, mask=mask)).to(x.dtype)

    def _layer_norm(self, xf: torch.Tensor) -> torch.Tensor:
        # LN branch in the statistics dtype, also when the module itself was cast to bf16/fp16
        ln = self.norm1
        return F.layer_norm(xf, ln.normalized_shape, ln.weight.to(xf.dtype), ln.bias.to(xf.dtype), ln.eps)
