"""Plugins that each break the normlight contract in one way the conformance kit checks.

Top-level classes, so the kit's distributed worker can re-import them (``py:bad_plugins:NoSync``).
Each keeps every check before its own, so the kit reaches the violation it is meant to report.
"""

import torch
from torch import nn


class GoodNorm(nn.Module):
    """A conforming per-token norm with a context-dependent gain, for the positive cases."""

    def __init__(self, num_features, eps=1e-5, layer_idx=None, num_layers=None, site=None, device=None, dtype=None):
        super().__init__()
        self.eps, self.site = eps, site
        depth = 1.0 if layer_idx is None else 1.0 / (layer_idx + 1) ** 0.5
        self.weight = nn.Parameter(torch.full((num_features,), depth, device=device, dtype=dtype))

    def forward(self, x):
        xf = x.float()
        y = (xf - xf.mean(-1, keepdim=True)) * torch.rsqrt(xf.var(-1, unbiased=False, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class NotAModule:
    """build: the factory returns something that is not an nn.Module."""

    def __init__(self, num_features):
        pass

    def __call__(self, x):
        return x


class FlattensPositions(GoodNorm):
    """shape: correct for (N, T, C) but collapses 4-d inputs to 3-d."""

    def forward(self, x):
        return super().forward(x.flatten(1, -2) if x.dim() == 4 else x)


class ReturnsFloat32(GoodNorm):
    """dtypes: forgets to cast the fp32 statistics back to the input dtype."""

    def forward(self, x):
        return super().forward(x).float()


class IgnoresLayout(GoodNorm):
    """channels_first: takes `layout` but normalizes the last dim of (N, C, H, W) anyway."""

    def __init__(self, num_features, layout=None):
        super().__init__(num_features)
        self.layout = layout


class WrongLayoutAxes(GoodNorm):
    """channels_first: handles `layout` itself, but normalizes over (C, H, W) per sample instead of over C."""

    def __init__(self, num_features, layout=None):
        super().__init__(num_features)
        self.layout = layout

    def forward(self, x):
        if self.layout != "channels_first":
            return super().forward(x)
        xf = x.float()
        mean, var = xf.mean((1, 2, 3), keepdim=True), xf.var((1, 2, 3), unbiased=False, keepdim=True)
        return ((xf - mean) * torch.rsqrt(var + self.eps) * self.weight.float()[:, None, None]).to(x.dtype)


class UnusedParameter(GoodNorm):
    """gradients: a trainable parameter that forward never uses (DDP fails on it)."""

    def __init__(self, num_features):
        super().__init__(num_features)
        self.unused = nn.Parameter(torch.zeros(num_features))


class PlainAttributeState(GoodNorm):
    """state_dict: a running shift kept as a plain tensor attribute, so checkpoints lose it."""

    def __init__(self, num_features):
        super().__init__(num_features)
        self.shift = torch.zeros(num_features)

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.shift = 0.9 * self.shift + 0.1 * x.float().reshape(-1, x.shape[-1]).mean(0)
        return super().forward(x - self.shift.to(x.dtype))


class HoldsLambda(GoodNorm):
    """copy: a lambda attribute makes the module unpicklable."""

    def __init__(self, num_features):
        super().__init__(num_features)
        self.act = lambda t: t


class RejectsSites(GoodNorm):
    """context: names `site` but only knows two of the sites normlight offers."""

    GAINS = {"attn_in": 1.0, "mlp_in": 1.0}

    def __init__(self, num_features, site=None):
        super().__init__(num_features)
        self.gain = self.GAINS[site] if site is not None else 1.0


class EvalCounter(GoodNorm):
    """train_eval: counts forwards in eval mode too, so eval changes the module's buffers."""

    def __init__(self, num_features):
        super().__init__(num_features)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


class UndeclaredBatchStats(nn.Module):
    """train_eval: normalizes with batch statistics but does not set uses_batch_statistics."""

    def __init__(self, num_features):
        super().__init__()
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        if not self.training:
            return x / self.running_var.add(1e-5).sqrt().to(x.dtype)
        var = x.float().reshape(-1, x.shape[-1]).var(0, unbiased=False)
        with torch.no_grad():
            self.running_var.mul_(0.9).add_(0.1 * var)
        return (x.float() / (var + 1e-5).sqrt()).to(x.dtype)


class _BatchStatBase(nn.Module):
    """A per-channel second-moment batch norm (no centring) with running stats and a mask; no sync."""

    uses_batch_statistics = True

    def __init__(self, num_features):
        super().__init__()
        self.register_buffer("running_stat", torch.ones(num_features))
        self.batch_stat = None

    def stat(self, x, mask):
        rows = x.float().reshape(-1, x.shape[-1])
        if mask is not None:
            rows = rows[mask.reshape(-1)]
        return rows.pow(2).mean(0)

    def forward(self, x, mask=None):
        if self.training:
            s = self.stat(x, mask)
            with torch.no_grad():
                self.running_stat.mul_(0.9).add_(0.1 * s)
            self.batch_stat = s.detach()
        else:
            s = self.running_stat
        return (x.float() / (s + 1e-5).sqrt()).to(x.dtype)


class NoBatchStatAttribute(_BatchStatBase):
    """batch_statistics: declares batch statistics but never sets batch_stat."""

    def forward(self, x, mask=None):
        y = super().forward(x, mask)
        self.batch_stat = None
        return y


class IgnoresMask(_BatchStatBase):
    """batch_statistics: accepts `mask` but lets padded tokens into the statistics."""

    def forward(self, x, mask=None):
        return super().forward(x, None)


class NoSync(_BatchStatBase):
    """distributed: per-rank statistics only, although it declares uses_batch_statistics."""


# ---- placements ----------------------------------------------------------------------------------
from normlight.blocks.placements.standard import PreNormBlock  # noqa: E402


class NotABlock(nn.Module):
    """block_class: a plain module, not a subclass of normlight.blocks.base.Block.

    ::

        x --> x
    """

    def forward(self, x, pos=None):
        return x


class NoDiagram(PreNormBlock):
    pass  # block_class: no docstring of its own, so no diagram of its data flow


class PeeksAhead(PreNormBlock):
    """gpt: mixes positions outside attention, so later tokens leak into earlier ones.

    ::

        x --(+ mean over all positions)--> pre-norm block --> out
    """

    def forward(self, x, pos=None):
        return super().forward(x + x.mean(1, keepdim=True), pos)


class Explodes(PreNormBlock):
    """gpt: an unbounded residual gain makes the output overflow.

    ::

        x --pre-norm block--> * 1e38 * 1e38 --> out
    """

    def forward(self, x, pos=None):
        return super().forward(x, pos) * 1e38 * 1e38
