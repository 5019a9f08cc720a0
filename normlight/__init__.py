"""normlight: which norm layer, where it sits, and what that does to stability and accuracy.

Public API (timm-style)::

    import normlight
    normlight.list_norms()                       # built-in and discovered norm plugins
    normlight.create_norm("rmsnorm", 512, eps=1e-6)
    normlight.list_placements()                  # pre, post, peri, ...
    normlight.list_models()                      # gpt-*, vit-*, resnet-*; also timm:<name>
    model = normlight.create_model("gpt-tiny", norm="powernorm", placement="peri", qk_norm="rmsnorm")
    normlight.compile_norms(model)               # norms' fast paths on torch.compile'd kernels
    normlight.set_fast_norms(model, False)       # back to the norms' reference eager code
    normlight.list_poolings(), normlight.list_residuals(), normlight.list_mixers(), normlight.list_depth_regularizers()
    model = normlight.create_model("vit-tiny", pool="ggem", residual="gate", depth_regularizer="drop_path")
"""

from __future__ import annotations

from importlib import metadata as _md

from normlight.blocks.factory import get_placement
from normlight.depth.factory import create_depth_regularizer
from normlight.errors import (
    AmbiguousNameError,
    NormlightError,
    PluginError,
    PluginOptionError,
    UnknownNameError,
)
from normlight.mixers.factory import create_mixer
from normlight.models.factory import create_model
from normlight.models.fold import fold
from normlight.norms.factory import create_norm
from normlight.norms.fast import compile_norms, set_fast_norms
from normlight.poolings.factory import create_pooling
from normlight.registry import (
    list_depth_regularizers,
    list_mixers,
    list_models,
    list_norms,
    list_placements,
    list_poolings,
    list_residuals,
    normalize_name,
)
from normlight.residuals.factory import create_residual

try:
    __version__ = _md.version("normlight")
except _md.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


__all__ = [
    "AmbiguousNameError",
    "NormlightError",
    "PluginError",
    "PluginOptionError",
    "UnknownNameError",
    "compile_norms",
    "create_depth_regularizer",
    "create_mixer",
    "create_model",
    "create_norm",
    "create_pooling",
    "create_residual",
    "fold",
    "get_placement",
    "list_depth_regularizers",
    "list_mixers",
    "list_models",
    "list_norms",
    "list_placements",
    "list_poolings",
    "list_residuals",
    "normalize_name",
    "set_fast_norms",
    "__version__",
]
