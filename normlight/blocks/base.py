"""``Block``: the base of every placement (where the norms sit around attention and MLP).

A placement subclass overrides ``forward`` and, when it needs other norms than the two pre-norm
slots, ``build_norms`` / ``attention_parts`` / ``mlp_parts``. Every norm is built through
``normlight.create_norm`` with its site and depth context, so any norm plugin works in any placement.

Class attributes read by the model factories:
- ``final_norm``: whether the model puts a norm (site "final") before the head;
- ``allows_weight_tying``: nGPT forbids tying the embedding and the head;
- ``recommended_defaults``: training hyperparameters the method's authors use (read by the task);
- ``positions``: the GPT position encodings the placement works with (the first is its default);
- ``depth_scaled_init``: whether the GPT-2 init scales the residual writers by 1/sqrt(2L).
Optional hooks (defined only where needed, so ``hasattr`` tells): ``init_weights(model)`` called by
the model factory after construction, ``after_optimizer_step(model)`` called by the training task.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from normlight.blocks.attention import Attention
from normlight.blocks.mlp import MLP
from normlight.errors import PluginOptionError
from normlight.norms.factory import create_norm


class Block(nn.Module):
    """Transformer block holding ``attn``, ``mlp`` and the norms; subclasses define the data flow."""

    final_norm: bool = True
    allows_weight_tying: bool = True
    recommended_defaults: dict = {}
    positions: tuple = ("learned", "rope")
    depth_scaled_init: bool = True

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        layer_idx: int = 0,
        num_layers: int = 1,
        norm: Any = "layernorm",
        norm_kwargs: dict | None = None,
        qk_norm: Any = None,
        qk_norm_kwargs: dict | None = None,
        mlp: str = "gelu",
        mlp_ratio: float = 4.0,
        causal: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
        rope: bool = False,
        max_seq_len: int = 1024,
        **placement_kwargs: Any,
    ):
        super().__init__()
        if placement_kwargs:
            raise PluginOptionError(
                f"placement {type(self).__name__} does not accept option(s) {sorted(placement_kwargs)}; "
                f"see its class docstring for the options it takes"
            )
        if not 0 <= layer_idx < num_layers:
            raise ValueError(f"layer_idx {layer_idx} is outside [0, num_layers={num_layers})")
        self.dim, self.num_heads = dim, num_heads
        self.layer_idx, self.num_layers = layer_idx, num_layers
        self.norm_spec, self.norm_kwargs = norm, dict(norm_kwargs or {})
        self.qk_norm_spec, self.qk_norm_kwargs = qk_norm, dict(qk_norm_kwargs or {})
        self.mlp_hidden = int(mlp_ratio * dim)
        self.attn = self.build_attention(causal=causal, bias=bias, dropout=dropout, rope=rope, max_seq_len=max_seq_len)
        self.mlp = self.build_mlp(act=mlp, bias=bias, dropout=dropout)
        self.build_norms()

    # --- construction hooks ---------------------------------------------------------------------
    def make_norm(self, site: str, size: int | None = None, spec: Any = None, kwargs: dict | None = None) -> nn.Module:
        """A norm from the block's spec (or ``spec``) over ``size`` features (default dim) at ``site``.

        ``kwargs`` may hold per-site overrides under ``"sites"`` (resolved by ``create_norm``).
        """
        spec = self.norm_spec if spec is None else spec
        kwargs = self.norm_kwargs if kwargs is None else kwargs
        return create_norm(
            spec,
            size or self.dim,
            site=site,
            layer_idx=self.layer_idx,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            **kwargs,
        )

    def make_qk_norm(self) -> nn.Module:
        """Per-head norm over head_dim for q or k (site "qk") from the ``qk_norm`` spec."""
        return self.make_norm("qk", self.dim // self.num_heads, self.qk_norm_spec, self.qk_norm_kwargs)

    def attention_parts(self) -> dict:
        """Optional parts of :class:`Attention` this placement adds; default: the ``qk_norm`` if given."""
        if self.qk_norm_spec is None:
            return {}
        return {"q_norm": self.make_qk_norm(), "k_norm": self.make_qk_norm()}

    def mlp_parts(self) -> dict:
        """Optional parts of :class:`MLP` (``mid_norm``); none by default."""
        return {}

    def build_attention(self, **kw: Any) -> nn.Module:
        """The attention sublayer."""
        return Attention(self.dim, self.num_heads, **kw, **self.attention_parts())

    def build_mlp(self, **kw: Any) -> nn.Module:
        """The MLP sublayer."""
        return MLP(self.dim, self.mlp_hidden, **kw, **self.mlp_parts())

    def build_norms(self) -> None:
        """The residual-stream norms: two pre-norm slots by default."""
        self.norm1 = self.make_norm("attn_in")
        self.norm2 = self.make_norm("mlp_in")

    @classmethod
    def logit_scale(cls, num_outputs: int) -> nn.Module | None:
        """A module the model applies to its logits (nGPT's s_z); none by default."""
        return None

    def forward(self, x, pos=None):  # pragma: no cover - abstract
        """Map the residual stream (B,T,D) to (B,T,D); ``pos`` is added to the attention input (LaPE)."""
        raise NotImplementedError(f"{type(self).__name__} must override forward(x, pos=None)")
