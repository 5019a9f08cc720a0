"""DyT, Dynamic Tanh (Zhu et al. 2025): an element-wise, statistics-free replacement for LayerNorm.

Why ``alpha_init="auto"`` is the default here: DyT only behaves like the norm it replaces when
``alpha * x`` is of order 1. The paper's constant 0.5 suits the activations of its ImageNet-scale
models; its own analysis shows the learned alpha tracking 1/std of the input activations, and its LLaMA
recipe lowers alpha0 as the width grows. In this suite's small models the norm inputs start at std
~0.03 (embeddings N(0, 0.02)): with alpha 0.5 DyT outputs std ~0.015 where LayerNorm outputs 1, the
blocks start with ~60x smaller gradients and GPT-nano stalls at the byte-unigram perplexity. ``"auto"``
therefore sets alpha0 = 1/std of the input of the first training forward (all elements, summed over
data-parallel ranks), once; the paper's constant is ``alpha_init=0.5``.

No alpha0 protects against a fast start, though. DyT is not scale-invariant: while the final norm works in its
linear range, the loss can sharpen the logits by growing the residual stream, and with a short warm-up at a
high learning rate Adam grows it ~130x within 50 steps (gpt-nano, lr 3e-3, 30 warm-up steps; LayerNorm's stream
grows ~25x and stops). The final DyT then saturates (|alpha x| > 2 for every element), and as every gradient of
a Pre-LN model passes through it, the blocks receive none (1e-16 and below) and the model stays a byte-unigram
model, with the paper's alpha0 as with ``"auto"``. DyT in the blocks tolerates saturation (the residual path
carries the gradient past it): with a LayerNorm at the final site the same model trains. A longer warm-up (200
of 400 steps) keeps enough of the final norm unsaturated that the blocks get LayerNorm-sized gradients;
``benchmarks/dyt_quickstart.py`` measures all three (results in ``benchmarks/results/dyt_quickstart.md``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from normlight import distributed
from normlight.norms import _fast_token, fast
from normlight.norms._common import cast, compute_dtype

AUTO = "auto"


class DyT(nn.Module):
    """``y = weight * tanh(alpha * x) + bias``.

    ``alpha`` is ONE learnable scalar (shape (1,)), init ``alpha_init``: a number (the paper's default is
    0.5) or ``"auto"`` (default here; see the module docstring), which sets it to 1/std of the input of
    the first training forward. Until then (e.g. an eval before training) alpha is 0.5. The buffer
    ``alpha_pending`` says whether that first forward is still to come; it is saved with the weights, so
    a resumed run keeps its alpha. ``weight`` init ones and ``bias`` init zeros, per channel. ``bias=False``
    gives the paper's LLaMA variant, which also sets alpha0 per role (e.g. 0.8 attention-input / 0.2
    FFN-input / 0.2 final for LLaMA2-7B): ``norm_kwargs={"bias": False, "alpha_init": 0.2,
    "sites": {"attn_in": {"alpha_init": 0.8}}}``, with the GPT option ``emb_scale=True`` for its
    embedding scale. No statistics after the first forward, so train == eval; half inputs are computed
    in float32 and cast back.

    Zhu, Chen, He, LeCun & Liu 2025, "Transformers without Normalization".
    """

    description = "Dynamic Tanh: weight * tanh(alpha * x) + bias with one learnable scalar alpha, no statistics"
    paper = "Zhu et al. 2025, Transformers without Normalization"

    def __init__(self, num_features: int, alpha_init: float | str = AUTO, bias: bool = True, device=None, dtype=None):
        super().__init__()
        auto = alpha_init == AUTO
        if not auto and not isinstance(alpha_init, (int, float)):
            raise ValueError(f"dyt: alpha_init must be a number or 'auto', got {alpha_init!r}")
        self.num_features, self.alpha_init = int(num_features), alpha_init
        factory = dict(device=device, dtype=dtype)
        self.alpha = nn.Parameter(torch.full((1,), 0.5 if auto else float(alpha_init), **factory))
        self.weight = nn.Parameter(torch.ones(self.num_features, **factory))
        self.bias = nn.Parameter(torch.zeros(self.num_features, **factory)) if bias else None
        self.register_buffer("alpha_pending", torch.tensor(auto, device=device))
        self._pending = auto  # Python mirror of the buffer: no device sync in forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Squash ``x`` of shape ``(..., num_features)`` element-wise."""
        if self._pending and self.training:
            self.init_alpha(x)
        dt = compute_dtype(x)
        if fast.on(self):
            args = (x.to(dt), self.alpha.to(dt), self.weight.to(dt), cast(self.bias, dt))
            return _fast_token.dyt(*args, fast.compiled(self)).to(x.dtype)
        t = torch.tanh(self.alpha.to(dt) * x.to(dt))
        y = t * self.weight.to(dt) if self.bias is None else torch.addcmul(self.bias.to(dt), t, self.weight.to(dt))
        return y.to(x.dtype)

    @torch.no_grad()
    def init_alpha(self, x: torch.Tensor) -> None:
        """``alpha = 1 / std(x)`` over all elements (and all data-parallel ranks); marks alpha initialized."""
        xf = x.detach().float()
        stats = torch.stack([xf.sum(), (xf * xf).sum(), xf.new_tensor(float(xf.numel()))])
        if distributed.distributed_ready():  # every rank must start from the same alpha
            distributed.all_reduce_sum_(stats)
        s, ss, n = stats.tolist()
        std = math.sqrt(max(ss / n - (s / n) ** 2, 0.0))
        if std > 0 and math.isfinite(std):  # a constant input keeps the placeholder
            self.alpha.fill_(1.0 / std)
        self.alpha_pending.fill_(False)
        self._pending = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before alpha_pending existed hold a trained alpha: nothing left to initialize
        state_dict.setdefault(prefix + "alpha_pending", torch.tensor(False))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._pending = bool(self.alpha_pending)

    def extra_repr(self) -> str:
        """``num_features, alpha_init=..., bias=...`` for ``print(model)``."""
        return f"{self.num_features}, alpha_init={self.alpha_init}, bias={self.bias is not None}"
