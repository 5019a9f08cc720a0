"""Conformance kit: check that a norm or placement plugin keeps normlight's plugin contract.

A plugin author calls it from their own tests, either as a function::

    from normlight.testing import check_norm_plugin
    check_norm_plugin("mynorm", num_features=16)           # raises ConformanceError saying what to fix

or as a pytest base class (one test per contract check)::

    from normlight.testing import NormPluginConformance

    class TestMyNorm(NormPluginConformance):
        norm = "mynorm"              # a registered name, or the factory itself
        options = {"eps": 1e-6}      # norm_kwargs to build with
        distributed = True           # also run the 2-rank gloo sync check (batch-statistic norms)

The other plugin kinds have the same pair: ``check_pooling_plugin`` / ``PoolingPluginConformance``
(``POOLING_CHECKS``), ``check_residual_plugin`` / ``ResidualPluginConformance``, ``check_mixer_plugin`` /
``MixerPluginConformance``, ``check_depth_regularizer_plugin`` / ``DepthRegularizerPluginConformance``.

Norm checks, in order (``NORM_CHECKS``): build, shape, dtypes (fp32, bf16, fp16), channels_first,
gradients, state_dict, copy (deepcopy + pickle), context (layer_idx / num_layers / site), train_eval,
batch_statistics, and the opt-in distributed check. Placement checks: a Block subclass with a diagram
docstring that trains in a tiny GPT (causal, finite) and a tiny ViT. See docs/plugins.md.

Modules: ``norms`` (norm checks), ``placements`` (placement checks), ``poolings``, ``residuals``, ``mixers``,
``depth`` (the other kinds' checks, sharing ``kinds``), ``distributed`` (the 2-rank gloo worker), ``classes``
(pytest base classes), ``common`` (errors, context, tolerances).
"""

from normlight.testing.classes import (
    DepthRegularizerPluginConformance,
    MixerPluginConformance,
    NormPluginConformance,
    PlacementPluginConformance,
    PoolingPluginConformance,
    ResidualPluginConformance,
)
from normlight.testing.common import (
    DEFAULT_CONTEXT,
    DEPTH_REGULARIZER_CHECKS,
    MIXER_CHECKS,
    NORM_CHECKS,
    PLACEMENT_CHECKS,
    POOLING_CHECKS,
    RESIDUAL_CHECKS,
    SITES,
    ConformanceError,
    ConformanceWarning,
)
from normlight.testing.depth import check_depth_regularizer_plugin
from normlight.testing.mixers import check_mixer_plugin
from normlight.testing.norms import check_norm_plugin
from normlight.testing.placements import check_placement_plugin
from normlight.testing.poolings import check_pooling_plugin
from normlight.testing.residuals import check_residual_plugin

__all__ = [
    "ConformanceError",
    "ConformanceWarning",
    "DEFAULT_CONTEXT",
    "DEPTH_REGULARIZER_CHECKS",
    "MIXER_CHECKS",
    "NORM_CHECKS",
    "PLACEMENT_CHECKS",
    "POOLING_CHECKS",
    "RESIDUAL_CHECKS",
    "SITES",
    "DepthRegularizerPluginConformance",
    "MixerPluginConformance",
    "NormPluginConformance",
    "PlacementPluginConformance",
    "PoolingPluginConformance",
    "ResidualPluginConformance",
    "check_depth_regularizer_plugin",
    "check_mixer_plugin",
    "check_norm_plugin",
    "check_placement_plugin",
    "check_pooling_plugin",
    "check_residual_plugin",
]
