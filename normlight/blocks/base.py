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
- ``supports_residuals``: False when the block has no ``x + F(x)`` for a residual plugin to replace (nGPT).

Plugin hooks a placement's ``forward`` calls: ``self.attn_residual(x, branch)`` and ``self.mlp_residual(x,
branch)`` wherever it joins a sublayer output to the stream (the ``residual`` plugin; ``add`` by default, so
``x + branch``), and ``self.attn(h, pos)`` is the token mixer (the ``mixer`` plugin; the placement's attention
by default).
Optional hooks (defined only where needed, so ``hasattr`` tells): ``init_weights(model)`` called by
the model factory after construction, ``after_optimizer_step(model)`` called by the training task.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from normlight.blocks.attention import Attention
from normlight.blocks.mlp import MLP
from normlight.errors import PluginError, PluginOptionError
from normlight.mixers.factory import create_mixer
from normlight.norms.factory import create_norm
from normlight.registry import resolve, spec_label
from normlight.residuals.add import Add
from normlight.residuals.base import BRANCH_SITES
from normlight.residuals.factory import create_residual, declared_sites


class Block(nn.Module):
    """Transformer block holding ``attn``, ``mlp`` and the norms; subclasses define the data flow."""

    final_norm: bool = True
    allows_weight_tying: bool = True
    recommended_defaults: dict = {}
    positions: tuple = ("learned", "rope")
    depth_scaled_init: bool = True
    supports_residuals: bool = True

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
        residual: Any = "add",
        residual_kwargs: dict | None = None,
        mixer: Any = "attention",
        mixer_kwargs: dict | None = None,
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
        self.residual_spec, self.residual_kwargs = residual, dict(residual_kwargs or {})
        self.mixer_spec, self.mixer_kwargs = mixer, dict(mixer_kwargs or {})
        self.mlp_hidden = int(mlp_ratio * dim)
        self.attn = self.build_mixer(causal=causal, bias=bias, dropout=dropout, rope=rope, max_seq_len=max_seq_len)
        self.mlp = self.build_mlp(act=mlp, bias=bias, dropout=dropout)
        self.build_norms()
        self.build_residuals()

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

    def build_mixer(self, **kw: Any) -> nn.Module:
        """The token mixer (``self.attn``): the placement's attention by default, else the ``mixer`` plugin."""
        factory, _ = resolve("mixers", self.mixer_spec)
        if factory is Attention:
            return self.build_attention(**kw, **self.mixer_kwargs)
        name = spec_label(self.mixer_spec)
        if self.qk_norm_spec is not None:
            raise PluginOptionError(
                f"qk_norm needs attention queries and keys, which mixer {name} has not; drop qk_norm"
            )
        custom = [h for h in ("build_attention", "attention_parts") if getattr(type(self), h) is not getattr(Block, h)]
        custom += ["init_weights"] if hasattr(type(self), "init_weights") else []
        if custom:
            raise PluginOptionError(
                f"mixer {name} replaces attention, but placement {type(self).__name__} customizes attention "
                f"({', '.join(custom)}); use mixer 'attention' with it, or a placement that leaves attention "
                "alone (pre, post, peri, sandwich, mix, none, rezero, skipinit)"
            )
        ctx = dict(num_heads=self.num_heads, layer_idx=self.layer_idx, num_layers=self.num_layers)
        return create_mixer(self.mixer_spec, self.dim, **ctx, **kw, **self.mixer_kwargs)

    def make_residual(self, site: str) -> nn.Module:
        """The ``residual`` plugin's module for ``site`` of this layer."""
        return create_residual(
            self.residual_spec,
            self.dim,
            site=site,
            layer_idx=self.layer_idx,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            **self.residual_kwargs,
        )

    def build_residuals(self) -> None:
        """``attn_residual``/``mlp_residual`` (plain add where the plugin does not act), ``depth_residual``
        (between blocks, or None) and the attention's ``value_residual`` when the plugin declares that site."""
        factory, _ = resolve("residuals", self.residual_spec)
        sites = declared_sites(self.residual_spec)
        name = spec_label(self.residual_spec)
        if factory is not Add and not self.supports_residuals:
            raise PluginOptionError(
                f"residual {name} cannot apply to placement {type(self).__name__}: it has no x + F(x) to replace; "
                "use residual 'add' with it"
            )
        self.attn_residual = self.make_residual("attn") if "attn" in sites else Add(self.dim)
        self.mlp_residual = self.make_residual("mlp") if "mlp" in sites else Add(self.dim)
        self.depth_residual = self.make_residual("depth") if "depth" in sites else None
        if "value" in sites:
            if not isinstance(self.attn, Attention):
                raise PluginOptionError(
                    f"residual {name} mixes attention values, but mixer {spec_label(self.mixer_spec)} has none; "
                    "use mixer 'attention' with it"
                )
            self.attn.value_residual = self.make_residual("value")
        if factory is not Add and set(sites) & set(BRANCH_SITES):
            # a placement written before residual plugins joins branches with `x + F(x)`: say so, never ignore
            for m in (self.attn_residual, self.mlp_residual):
                m.register_forward_pre_hook(_mark_call)
            self.register_forward_pre_hook(_reset_calls)
            self.register_forward_hook(_check_calls)

    def residual_modules(self) -> dict:
        """Every residual module of this block by site (``attn``, ``mlp``, ``depth``, ``value``), None where absent."""
        return {
            "attn": self.attn_residual,
            "mlp": self.mlp_residual,
            "depth": self.depth_residual,
            "value": getattr(self.attn, "value_residual", None),
        }

    @classmethod
    def logit_scale(cls, num_outputs: int) -> nn.Module | None:
        """A module the model applies to its logits (nGPT's s_z); none by default."""
        return None

    def forward(self, x, pos=None):  # pragma: no cover - abstract
        """Map the residual stream (B,T,D) to (B,T,D); ``pos`` is added to the attention input (LaPE)."""
        raise NotImplementedError(f"{type(self).__name__} must override forward(x, pos=None)")


def _mark_call(module: nn.Module, args) -> None:
    """Forward pre-hook on a residual module: it was called in this block pass."""
    module._called = True


def _reset_calls(block: Block, args) -> None:
    """Forward pre-hook on a block with a residual plugin: no residual module called yet (runs before them)."""
    block.attn_residual._called = block.mlp_residual._called = False


def _check_calls(block: Block, args, out) -> None:
    """Forward hook: a block whose placement never called its residual modules would silently ignore the plugin."""
    if not (block.attn_residual._called or block.mlp_residual._called):
        raise PluginError(
            f"residual {spec_label(block.residual_spec)} was never applied: placement {type(block).__name__} "
            "joins its branches with `x + F(x)` instead of `self.attn_residual(x, F(x))` / "
            "`self.mlp_residual(x, F(x))` (see docs/plugins.md, 'Residual plugins')"
        )
