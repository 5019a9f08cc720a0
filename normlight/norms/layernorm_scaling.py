"""LayerNorm Scaling ("The Curse of Depth", Sun et al. 2025): a pre-norm output damped by 1/sqrt(depth)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from normlight.norms import _fast_token, fast
from normlight.norms._common import cast, compute_dtype
from normlight.norms.layernorm import LayerNorm
from normlight.norms.rmsnorm import RMSNorm

# Norms a model builds outside its blocks: the paper scales only the blocks' pre-norms.
MODEL_SITES = ("final", "patch_pre", "patch_post")


class LayerNormScaling(nn.Module):
    """``y = N(x) / sqrt(l)`` with ``l = layer_idx + 1`` (layers counted from 1): 1, 0.7071, 0.5774, 0.5, ...

    ``N`` is LayerNorm (``base="layernorm"``, default) or RMSNorm (``base="rmsnorm"``, as in the paper,
    which used RMSNorm with eps 1e-6: pass ``eps=1e-6``). ``eps``, ``elementwise_affine`` and ``bias``
    go to the base norm; ``None`` keeps the base's own default. ``layer_idx`` (0-based block index)
    is the context keyword the model passes when it builds the norm of block ``layer_idx``; it is
    required for block norms. The paper scales the pre-norms of every block but not the final norm, so a
    norm built at a model-level site (``site`` in ``MODEL_SITES``: final, patch_pre, patch_post) has
    scale 1. It advises normal (not depth-scaled) weight init together with it: ``depth_scaled_init =
    False`` tells the GPT/ViT init to draw the residual writers from plain N(0, 0.02). So
    ``placement="pre", norm="layernorm_scaling"`` builds the same model as ``placement="lns",
    norm="layernorm"`` (the ``lns`` placement refuses this norm: that would scale twice).

    Sun et al. 2025, "The Curse of Depth in Large Language Models".
    """

    description = "LayerNorm Scaling: pre-norm output of layer l scaled by 1/sqrt(l) (needs layer_idx)"
    paper = "Sun et al. 2025, The Curse of Depth in Large Language Models"
    depth_scaled_init = False

    def __init__(
        self,
        num_features: int,
        layer_idx: int | None = None,
        base: str = "layernorm",
        eps: float | None = None,
        elementwise_affine: bool = True,
        bias: bool | None = None,
        site: str | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        model_level = site in MODEL_SITES
        if layer_idx is None and not model_level:
            raise ValueError(
                "layernorm_scaling needs the 0-based block index: build it with "
                "create_norm('layernorm_scaling', C, layer_idx=i) (models pass layer_idx for block norms)"
            )
        if layer_idx is not None and int(layer_idx) < 0:
            raise ValueError(f"layernorm_scaling layer_idx must be >= 0 (0-based), got {layer_idx}")
        bases = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}
        if base not in bases:
            raise ValueError(f"layernorm_scaling base must be one of {sorted(bases)}, got {base!r}")
        options = {k: v for k, v in dict(eps=eps, bias=bias).items() if v is not None}
        self.norm = bases[base](
            num_features, elementwise_affine=elementwise_affine, device=device, dtype=dtype, **options
        )
        self.num_features, self.base, self.site = int(num_features), base, site
        self.layer_idx = None if layer_idx is None else int(layer_idx)
        self.scale = 1.0 if model_level else 1.0 / math.sqrt(self.layer_idx + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize ``x`` of shape ``(..., num_features)`` with the base norm, then scale by 1/sqrt(layer_idx + 1)."""
        if fast.on(self):
            return self._fast(x)
        # scaled in the statistics dtype: the base norm's half output scaled in half would round twice
        return (self.norm(x.to(compute_dtype(x))) * self.scale).to(x.dtype)

    def _fast(self, x: torch.Tensor) -> torch.Tensor:
        # the scale folded into the base norm's affine parameters: one pass fewer
        norm, dt, c = self.norm, compute_dtype(x), self.num_features
        w = cast(norm.weight, dt)
        w = torch.full((c,), self.scale, dtype=dt, device=x.device) if w is None else w * self.scale
        b = None if norm.bias is None else norm.bias.to(dt) * self.scale
        if self.base == "layernorm":
            return F.layer_norm(x.to(dt), (c,), w, b, norm.eps).to(x.dtype)
        if x.shape[-1] != c:
            raise ValueError(f"layernorm_scaling was built for {c} features but got an input of shape {tuple(x.shape)}")
        return _fast_token.rms_norm(x.to(dt), w, b, norm._eps(dt), fast.compiled(self)).to(x.dtype)

    def extra_repr(self) -> str:
        """``layer_idx=..., site=..., scale=...`` for ``print(model)``."""
        return f"layer_idx={self.layer_idx}, site={self.site}, scale={self.scale:.6g}"
