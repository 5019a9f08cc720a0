"""Three norms that are not in normlight's core catalog, written to normlight's norm-plugin contract.

Contract (docs/plugins.md in normlight): ``Norm(num_features, **options)`` returns an ``nn.Module``
mapping ``(..., C) -> (..., C)``; dim 0 is the batch, the last dim the features, the dims in between
positions. Statistics are computed in fp32 for bf16/fp16 inputs and the result is cast back.

- ``biasnorm``:    BiasNorm (Zipformer)          y = x / RMS(x - b) * exp(gamma)
- ``l1norm``:      L1 normalization, per token   y = w * (x - mu) / (mean|x - mu| + eps) + beta
- ``l1batchnorm``: L1 batch normalization        the same over (batch, positions) per channel, with
                   running statistics and cross-rank sync (``uses_batch_statistics = True``)
"""

from __future__ import annotations

import torch
from torch import nn


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # statistics in at least fp32: bf16/fp16 sums over hundreds of features lose the mean
    return torch.promote_types(x.dtype, torch.float32)


def _check_features(name: str, x: torch.Tensor, num_features: int) -> None:
    if x.shape[-1] != num_features:
        raise ValueError(
            f"{name} was built for {num_features} features but got an input of shape {tuple(x.shape)}; "
            f"the features must be the last dim (use layout='channels_first' in normlight.create_norm for (N, C, H, W))"
        )


class BiasNorm(nn.Module):
    """BiasNorm (Zipformer): ``y = x / RMS(x - b) * exp(gamma)``.

    ``b`` is a learnable per-channel bias that only enters the statistic, so the output keeps the
    component of ``x`` along ``b`` (the "length information" LayerNorm removes); ``gamma`` is one
    learnable scalar log-scale. From general knowledge of the reference implementation (icefall's
    ``scaling.py``), not from the catalog excerpt: ``gamma`` starts at ``log_scale=1.0`` and is kept in
    ``[-1.5, 1.5]``; here it is clamped in the forward pass (zero gradient outside the range). The
    reference has no eps; ``eps`` (inside the root) only guards an all-equal input.
    """

    description = "BiasNorm: x / RMS(x - b) * exp(gamma), learnable per-channel bias b and scalar log-scale gamma"
    paper = "Yao et al. 2023, Zipformer: A faster and better encoder for automatic speech recognition"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-8,
        log_scale: float = 1.0,
        log_scale_min: float = -1.5,
        log_scale_max: float = 1.5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if log_scale_min > log_scale_max:
            raise ValueError(f"biasnorm: log_scale_min={log_scale_min} must not exceed log_scale_max={log_scale_max}")
        self.num_features, self.eps = int(num_features), float(eps)
        self.log_scale_min, self.log_scale_max = float(log_scale_min), float(log_scale_max)
        self.bias = nn.Parameter(torch.zeros(self.num_features, device=device, dtype=dtype))
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize over the last dim."""
        _check_features("biasnorm", x, self.num_features)
        ct = _compute_dtype(x)
        xf = x.to(ct)
        inv_rms = (xf - self.bias.to(ct)).pow(2).mean(-1, keepdim=True).add(self.eps).rsqrt()
        scale = self.log_scale.to(ct).clamp(self.log_scale_min, self.log_scale_max).exp()
        return (xf * inv_rms * scale).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, log_scale_range=({self.log_scale_min}, {self.log_scale_max})"


class L1Norm(nn.Module):
    """L1 normalization per token: ``y = w * (x - mu) / (mean|x - mu| + eps) + beta`` over the last dim.

    LayerNorm with the standard deviation replaced by the mean absolute deviation, which needs no
    square or square root (the point for fully quantized integer training). For Gaussian inputs
    ``mean|x - mu| = sqrt(2/pi) * std``, so the output's std is about 1.25 at init; the learnable
    weight absorbs that, as in the paper's formula (no constant is added here).
    """

    description = "L1 normalization: LayerNorm with the mean absolute deviation instead of the std"
    paper = "2024, Towards Accurate and Efficient Sub-8-Bit Integer Training"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.num_features, self.eps = int(num_features), float(eps)
        kw = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.ones(self.num_features, **kw)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(self.num_features, **kw)) if elementwise_affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize over the last dim."""
        _check_features("l1norm", x, self.num_features)
        ct = _compute_dtype(x)
        xc = x.to(ct) - x.to(ct).mean(-1, keepdim=True)
        y = xc / (xc.abs().mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(ct)
        if self.bias is not None:
            y = y + self.bias.to(ct)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, elementwise_affine={self.weight is not None}"


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward sums the gradient over ranks too (each rank's loss feeds every statistic)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _sum_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """Differentiable all-reduce (sum) when a process group with several ranks is running."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _AllReduceSum.apply(t)
    return t


class L1BatchNorm(nn.Module):
    """L1 batch normalization: per channel over (batch, positions), mean absolute deviation as the scale.

    Training: ``mu = mean(x)``, ``d = mean|x - mu|`` over every dim but the last (only real tokens when
    ``mask`` is given), ``y = w * (x - mu) / (d + eps) + beta``; running estimates
    ``r <- (1 - momentum) * r + momentum * batch`` (no Bessel-like correction: the MAD has none).
    Eval uses the running estimates. Under ``torch.distributed`` the sums are all-reduced (two rounds:
    the mean, then the deviation about the global mean), so N ranks on N shards equal one full batch.
    """

    description = "L1 batch norm: BatchNorm with the mean absolute deviation; running stats, masks, cross-rank sync"
    paper = "Wu et al. 2018, L1-Norm Batch Normalization for Efficient Training of Deep Neural Networks"
    uses_batch_statistics = True

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        sync_stats: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"l1batchnorm: momentum={momentum} must be in [0, 1]")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.sync_stats = bool(sync_stats)
        kw = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.ones(self.num_features, **kw)) if affine else None
        self.bias = nn.Parameter(torch.zeros(self.num_features, **kw)) if affine else None
        self.register_buffer("running_mean", torch.zeros(self.num_features, device=device, dtype=torch.float32))
        self.register_buffer("running_mad", torch.ones(self.num_features, device=device, dtype=torch.float32))
        self.batch_stat: torch.Tensor | None = None  # MAD of the last training batch, for diagnostics

    @property
    def running_stat(self) -> torch.Tensor:
        """The per-channel running MAD that eval normalizes with."""
        return self.running_mad

    def _batch_moments(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = x.reshape(-1, self.num_features)
        if mask is not None:
            rows = rows[mask.reshape(-1)]
        sync = self.sync_stats and self.training
        reduce = _sum_across_ranks if sync else (lambda t: t)
        first = reduce(torch.cat([rows.sum(0), rows.new_full((1,), rows.shape[0])]))
        count = first[-1]
        if count.item() <= 1:
            raise ValueError(
                "l1batchnorm needs more than one value per channel in training (got "
                f"{int(count.item())}); use a larger batch, or a batch-independent norm such as l1norm or groupnorm"
            )
        mean = first[:-1] / count
        mad = reduce((rows - mean).abs().sum(0)) / count
        return mean, mad

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalize with batch statistics in training and running statistics in eval.

        ``mask`` (shape ``x.shape[:-1]``, True = real token) excludes padding from the statistics;
        padded positions are still normalized.
        """
        _check_features("l1batchnorm", x, self.num_features)
        if mask is not None and tuple(mask.shape) != tuple(x.shape[:-1]):
            raise ValueError(
                f"l1batchnorm: mask of shape {tuple(mask.shape)} must have the input's shape without "
                f"the feature dim, {tuple(x.shape[:-1])}"
            )
        ct = _compute_dtype(x)
        xf = x.to(ct)
        if self.training:
            mean, mad = self._batch_moments(xf, None if mask is None else mask.to(torch.bool))
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                self.running_mad.mul_(1 - m).add_(mad.detach().to(self.running_mad.dtype), alpha=m)
            self.batch_stat = mad.detach().to(self.running_mad.dtype)
        else:
            mean, mad = self.running_mean.to(ct), self.running_mad.to(ct)
        y = (xf - mean) / (mad + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(ct) + self.bias.to(ct)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, sync_stats={self.sync_stats}"
