"""Weight-standardized convolutions: WS (Qiao et al. 2019) and Scaled WS (Brock et al. 2021).

Both re-parameterize the kernel on every forward; the stored ``weight`` stays the free parameter,
so optimizers and checkpoints see an ordinary conv. Statistics are per output channel over the
fan-in (in_channels/groups * kh * kw), i.e. dims (1, 2, 3) of the (O, I, kh, kw) kernel.
"""

from __future__ import annotations

import torch
from torch import nn


class WSConv2d(nn.Conv2d):
    """Conv2d with Weight Standardization (Qiao et al. 2019, "Micro-Batch Training with BCN and WS").

    ``W_hat = (W - mean(W)) / sqrt(var_unbiased(W) + eps)`` per output channel, eps 1e-5 inside the
    root, no gain; paired with GroupNorm or BCN so no batch statistics are needed.
    """

    def __init__(self, *args, eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        """The kernel actually used by forward (standardized in float32, cast back to the weight's dtype)."""
        w = self.weight.float()
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=True)
        return ((w - mean) / torch.sqrt(var + self.eps)).to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` with the standardized kernel."""
        return self._conv_forward(
            x, self.standardized_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype)
        )


class ScaledWSConv2d(nn.Conv2d):
    """Conv2d with Scaled Weight Standardization (NF-ResNets / NFNets, Brock et al. 2021).

    ``W_hat = gain * (W - mean(W)) / sqrt(max(N * var(W), eps))`` per output channel, N = fan-in,
    biased variance, eps = 1e-4 as a clamp (not added). ``gain`` (one per output channel) starts at 1,
    the bias is always present and starts at 0, the raw weight is drawn from N(0, 1/fan_in).
    Each standardized filter therefore has mean 0 and L2 norm ``gain``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        eps: float = 1e-4,
        device=None,
        dtype=None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=True,
            device=device,
            dtype=dtype,
        )
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1, device=device, dtype=dtype))
        self.eps = eps
        fan_in = self.weight[0].numel()
        with torch.no_grad():
            self.weight.normal_(0.0, fan_in**-0.5)
            self.bias.zero_()

    def standardized_weight(self) -> torch.Tensor:
        """The kernel actually used by forward: gain * (W - mean) / sqrt(max(fan_in * var, eps))."""
        w = self.weight.float()
        fan_in = w[0].numel()
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        scale = torch.rsqrt(torch.clamp(var * fan_in, min=self.eps))
        return (self.gain.float() * (w - mean) * scale).to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` with the scaled standardized kernel."""
        return self._conv_forward(x, self.standardized_weight().to(x.dtype), self.bias.to(x.dtype))


def conv_with_same_weights(conv: nn.Conv2d) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` computing what ``conv`` computes (WS kernels materialized); used by folding."""
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        w = conv.standardized_weight() if hasattr(conv, "standardized_weight") else conv.weight
        plain.weight.copy_(w)
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return plain


__all__ = ["WSConv2d", "ScaledWSConv2d", "conv_with_same_weights"]
