"""timm models with any normlight norm: ``normlight.create_model("timm:<name>", norm=..., norm_kwargs=...)``.

timm builds every norm of a model through its ``norm_layer`` argument, calling
``norm_layer(num_features, device=..., dtype=..., [eps=...])``. Some models feed those norms
channels-first maps (ResNet, ConvNeXt with ``conv_mlp=True``), others channels-last tokens (ViT,
MambaOut). Which one a given norm sees is not visible from its construction, so the model is
first built with placeholder norms (identities that remember how they were called), run once on a
small input, and every placeholder is then replaced by the plugin norm built with the layout its
input showed::

    timm.create_model(name, norm_layer=Placeholder) --> forward(example) --> each placeholder saw
    (N, C, H, W) -> create_norm(norm, C, layout="channels_first")   or   (..., C) -> create_norm(norm, C)

Each plugin norm gets timm's eps for its site (a plugin that takes ``eps``, unless ``norm_kwargs`` sets one):
the eps timm passed to ``norm_layer``, or else the eps of the norm timm builds there by default (read from
the same model built with its own norms on the meta device). So ``timm:vit_*`` with ``norm="layernorm"`` gets
timm's LayerNorm eps 1e-6, where ViT calls ``norm_layer(dim)`` and relies on that default.

Pretrained weights are never fetched (``pretrained=False``).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch
from torch import nn

from normlight.errors import PluginError, PluginOptionError, UnknownNameError
from normlight.norms.factory import create_norm
from normlight.registry import resolve

BLOCK_SUFFIXES = ("Block", "Bottleneck", "BasicBlock")


def _placeholder_class(made: list) -> type:
    """A fresh placeholder norm class (timm accepts a class as ``norm_layer``) recording into ``made``."""

    class PlaceholderNorm(nn.Module):
        """Identity standing in for a plugin norm until its input layout is known."""

        def __init__(self, num_features: int, eps: float | None = None, device=None, dtype=None, **kwargs: Any):
            super().__init__()
            self.num_features, self.eps, self.timm_kwargs = int(num_features), eps, kwargs
            self.device_, self.dtype_ = device, dtype
            self.seen: tuple[int, ...] | None = None
            made.append(self)

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            """Pass ``x`` through and remember its shape."""
            if self.seen is None:
                self.seen = tuple(x.shape)
            return x

    return PlaceholderNorm


def layout_of(shape: tuple[int, ...] | None, channels: int) -> str | None:
    """``"channels_first"`` for (N, C, *spatial) inputs, None (channels-last) for (..., C) or never-called norms."""
    if shape is None or len(shape) < 3:
        return None
    first, last = shape[1] == channels, shape[-1] == channels
    if first and (not last or len(shape) == 4):  # a 4-D map with C == W is taken as a CNN map
        return "channels_first"
    return None


def _build(timm, name: str, kwargs: dict) -> nn.Module:
    """timm.create_model with clear errors naming the model."""
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        bad = [k for k in kwargs if f"'{k}'" in str(exc)]
        if bad:
            raise PluginOptionError(
                f"timm model {name!r} does not accept {', '.join(bad)} ({exc}); "
                f"{'it cannot take a normlight norm' if 'norm_layer' in bad else 'drop that option'}"
            ) from exc
        raise
    except AssertionError as exc:
        if "norm_layer" in kwargs:
            raise PluginOptionError(
                f"timm model {name!r} rejected a custom norm_layer: {exc or 'assertion failed'}. "
                "Pass the model option it asks for (e.g. conv_mlp=True for ConvNeXt), "
                "or pick a model that builds its norms from norm_layer"
            ) from exc
        raise


def _accepts(factory: Any, name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _set(model: nn.Module, qualname: str, module: nn.Module) -> None:
    parent, _, child = qualname.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost modules whose class is a timm residual block (``*Block``, ``*Bottleneck``), in order."""
    found: list[tuple[str, nn.Module]] = []
    for qual, m in model.named_modules():
        if qual and type(m).__name__.endswith(BLOCK_SUFFIXES) and not any(qual.startswith(q + ".") for q, _ in found):
            found.append((qual, m))
    return [m for _, m in found]


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The model's own ``blocks`` container if it has one (ViT), else its outermost residual blocks."""
    own = getattr(model, "blocks", None)
    return list(own) if isinstance(own, (nn.Sequential, nn.ModuleList)) else residual_blocks(model)


def depth_index(model: nn.Module, norms: list[nn.Module]) -> dict[int, int]:
    """0-based residual-block index of each norm (stem norms 0, head norms the last block's), for depth-aware norms."""
    starts = {id(b): i for i, b in enumerate(_blocks(model))}
    wanted = {id(m) for m in norms}
    current, out = 0, {}
    for _, m in model.named_modules():  # registration order follows the forward order in timm models
        current = starts.get(id(m), current)
        if id(m) in wanted:
            out[id(m)] = current
    return out


def create_timm_model(
    name: str,
    norm: Any = None,
    norm_kwargs: dict | None = None,
    num_classes: int | None = None,
    img_size: int | None = None,
    in_chans: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build timm model ``name`` (no pretrained weights) with every norm replaced by the plugin ``norm``.

    ``norm=None`` keeps timm's own norms. ``kwargs`` go to the timm model (``depth``, ``conv_mlp``, ...).
    The result is the timm module itself with ``family="timm"``, ``spec``, ``num_classes``,
    ``img_size``, ``in_chans``, ``placement_cls=None`` and ``blocks`` (its residual blocks) set.
    A model that does not build its norms from ``norm_layer`` raises :class:`PluginOptionError`.
    """
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown timm model {name!r}.{hint} `timm.list_models('*pattern*')` lists them")
    build_kw = dict(kwargs)
    for key, value in (("num_classes", num_classes), ("in_chans", in_chans), ("img_size", img_size)):
        if value is not None:
            build_kw[key] = value
    made: list = []
    if norm is not None:
        resolve("norms", norm)  # an unknown norm fails here, before timm builds anything
        build_kw["norm_layer"] = _placeholder_class(made)
    try:
        model = _build(timm, name, build_kw)
    except PluginOptionError as exc:
        if "img_size" not in str(exc) or "img_size" not in build_kw:
            raise
        build_kw.pop("img_size")  # CNNs take any size: img_size is only recorded
        model = _build(timm, name, build_kw)
    in_chans = in_chans or getattr(model, "in_chans", None) or model.pretrained_cfg.get("input_size", (3,))[0]
    size = img_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    if norm is not None:
        own = {k: v for k, v in build_kw.items() if k != "norm_layer"}
        _swap_norms(model, name, made, norm, dict(norm_kwargs or {}), in_chans, size, default_eps(timm, name, own))
    model.family = "timm"
    model.placement_cls = None
    model.in_chans, model.img_size = in_chans, size
    if not isinstance(getattr(model, "blocks", None), (nn.Sequential, nn.ModuleList)):
        model.blocks = residual_blocks(model)  # a plain list: nothing is registered twice
    model.spec = dict(
        name=f"timm:{name}",
        norm=norm if norm is None or isinstance(norm, str) else repr(norm),
        norm_kwargs=dict(norm_kwargs or {}),
        num_classes=model.num_classes,
        img_size=size,
        in_chans=in_chans,
        placement=None,
        **{k: v for k, v in kwargs.items()},
    )
    return model


def default_eps(timm, name: str, build_kw: dict) -> dict[str, float]:
    """The eps of every norm timm builds by default in model ``name``, by qualified name (built on the meta device)."""
    model = timm.create_model(name, pretrained=False, device="meta", **build_kw)
    return {q: float(m.eps) for q, m in model.named_modules() if isinstance(getattr(m, "eps", None), float)}


def _swap_norms(
    model: nn.Module,
    name: str,
    made: list,
    norm: Any,
    norm_kwargs: dict,
    in_chans: int,
    size: int,
    own_eps: dict[str, float],
) -> None:
    """Run the placeholder model once, then put the plugin norm, built for the seen layout, in each place."""
    placed = {id(m): q for q, m in model.named_modules()}
    used = [m for m in made if id(m) in placed]
    if not used:
        raise PluginOptionError(
            f"timm model {name!r} accepts norm_layer but builds no norm with it; it cannot take a normlight norm"
        )
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, in_chans, size, size))
    model.train(was_training)
    factory, _ = resolve("norms", norm)
    takes_eps = _accepts(factory, "eps")
    depth = depth_index(model, used)
    num_layers = max(1, len(_blocks(model)))
    for ph in used:
        opts = dict(norm_kwargs)
        eps = ph.eps if ph.eps is not None else own_eps.get(placed[id(ph)])
        if takes_eps and eps is not None and "eps" not in opts:
            opts["eps"] = eps  # like-for-like with timm's own choice at that site, passed or default
        layout = layout_of(ph.seen, ph.num_features)
        try:
            real = create_norm(
                norm,
                ph.num_features,
                layout=layout,
                site="conv" if layout else None,
                layer_idx=depth[id(ph)],
                num_layers=num_layers,
                device=ph.device_,
                dtype=ph.dtype_,
                **opts,
            )
        except (PluginError, PluginOptionError) as exc:
            raise PluginOptionError(
                f"timm model {name!r}: norm {norm!r} could not be built for "
                f"{ph.num_features} features at {placed[id(ph)]}: {exc}"
            ) from exc
        _set(model, placed[id(ph)], real)
