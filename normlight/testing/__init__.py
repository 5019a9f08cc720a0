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

Norm checks, in order (``NORM_CHECKS``): build, shape, dtypes (fp32, bf16, fp16), channels_first,
gradients, state_dict, copy (deepcopy + pickle), context (layer_idx / num_layers / site), train_eval,
batch_statistics, and the opt-in distributed check. Placement checks: a Block subclass with a diagram
docstring that trains in a tiny GPT (causal, finite) and a tiny ViT. See docs/plugins.md.

Modules: ``norms`` (norm checks), ``placements`` (placement checks), ``distributed`` (the 2-rank gloo
worker), ``classes`` (pytest base classes), ``common`` (errors, context, tolerances).
"""

from normlight.testing.classes import NormPluginConformance, PlacementPluginConformance
from normlight.testing.common import (
    DEFAULT_CONTEXT,
    NORM_CHECKS,
    PLACEMENT_CHECKS,
    SITES,
    ConformanceError,
    ConformanceWarning,
)
from normlight.testing.norms import check_norm_plugin
from normlight.testing.placements import check_placement_plugin

__all__ = [
    "ConformanceError",
    "ConformanceWarning",
    "DEFAULT_CONTEXT",
    "NORM_CHECKS",
    "PLACEMENT_CHECKS",
    "SITES",
    "NormPluginConformance",
    "PlacementPluginConformance",
    "check_norm_plugin",
    "check_placement_plugin",
]
