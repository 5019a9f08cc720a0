"""pytest base classes: subclass with a name starting with ``Test``; each contract check becomes one test."""

from __future__ import annotations

from typing import Any

from normlight.testing.common import DEFAULT_CONTEXT, DEFAULT_DTYPES, SITES, ConformanceError
from normlight.testing.depth import check_depth_regularizer_plugin
from normlight.testing.mixers import check_mixer_plugin
from normlight.testing.norms import check_norm_plugin
from normlight.testing.placements import check_placement_plugin
from normlight.testing.poolings import check_pooling_plugin
from normlight.testing.residuals import check_residual_plugin


class NormPluginConformance:
    """Subclass as ``class TestMyNorm(NormPluginConformance): norm = "mynorm"`` to get one test per check."""

    norm: Any = None
    num_features: int = 64
    options: dict = {}
    context: dict = DEFAULT_CONTEXT
    dtypes: tuple = DEFAULT_DTYPES
    sites: tuple = SITES
    distributed: bool = False  # the 2-rank gloo check takes a few seconds; opt in for batch-statistic norms

    def _run(self, check: str) -> None:
        if self.norm is None:
            raise ConformanceError(f"{type(self).__name__} must set the class attribute `norm` (a name or a factory)")
        check_norm_plugin(
            self.norm,
            self.num_features,
            options=self.options,
            context=self.context,
            checks=[check],
            dtypes=self.dtypes,
            sites=self.sites,
        )

    def test_build(self):
        self._run("build")

    def test_shape(self):
        self._run("shape")

    def test_dtypes(self):
        self._run("dtypes")

    def test_channels_first(self):
        self._run("channels_first")

    def test_gradients(self):
        self._run("gradients")

    def test_state_dict(self):
        self._run("state_dict")

    def test_copy(self):
        self._run("copy")

    def test_context(self):
        self._run("context")

    def test_train_eval(self):
        self._run("train_eval")

    def test_batch_statistics(self):
        self._run("batch_statistics")

    def test_distributed(self):
        if not self.distributed:
            import pytest

            pytest.skip("distributed sync check is opt-in: set distributed = True")
        self._run("distributed")


class PlacementPluginConformance:
    """Subclass as ``class TestMyBlock(PlacementPluginConformance): placement = "myblock"``."""

    placement: Any = None
    norm: Any = "layernorm"

    def _run(self, check: str) -> None:
        if self.placement is None:
            raise ConformanceError(f"{type(self).__name__} must set the class attribute `placement`")
        check_placement_plugin(self.placement, norm=self.norm, checks=[check])

    def test_block_class(self):
        self._run("block_class")

    def test_gpt(self):
        self._run("gpt")

    def test_vit(self):
        self._run("vit")


class _KindConformance:
    """Shared runner of the pooling, residual, mixer and depth-regularizer base classes."""

    attr: str = ""
    options: dict = {}

    @staticmethod
    def _check(spec, **kw):  # pragma: no cover - set by subclasses
        raise NotImplementedError

    def _run(self, check: str) -> None:
        spec = getattr(self, self.attr, None)
        if spec is None:
            raise ConformanceError(f"{type(self).__name__} must set the class attribute `{self.attr}`")
        type(self)._check(spec, options=self.options, checks=[check])


class PoolingPluginConformance(_KindConformance):
    """Subclass as ``class TestMyPool(PoolingPluginConformance): pooling = "mypool"``."""

    attr, pooling = "pooling", None
    _check = staticmethod(check_pooling_plugin)

    def test_build(self):
        self._run("build")

    def test_shape(self):
        self._run("shape")

    def test_dtypes(self):
        self._run("dtypes")

    def test_gradients(self):
        self._run("gradients")

    def test_state_dict(self):
        self._run("state_dict")

    def test_batch_independence(self):
        self._run("batch_independence")

    def test_model(self):
        self._run("model")


class ResidualPluginConformance(_KindConformance):
    """Subclass as ``class TestMyResidual(ResidualPluginConformance): residual = "myresidual"``."""

    attr, residual = "residual", None
    _check = staticmethod(check_residual_plugin)

    def test_build(self):
        self._run("build")

    def test_shape(self):
        self._run("shape")

    def test_gradients(self):
        self._run("gradients")

    def test_state_dict(self):
        self._run("state_dict")

    def test_model(self):
        self._run("model")


class MixerPluginConformance(_KindConformance):
    """Subclass as ``class TestMyMixer(MixerPluginConformance): mixer = "mymixer"``."""

    attr, mixer = "mixer", None
    _check = staticmethod(check_mixer_plugin)

    def test_build(self):
        self._run("build")

    def test_shape(self):
        self._run("shape")

    def test_causal(self):
        self._run("causal")

    def test_gradients(self):
        self._run("gradients")

    def test_state_dict(self):
        self._run("state_dict")

    def test_model(self):
        self._run("model")


class DepthRegularizerPluginConformance(_KindConformance):
    """Subclass as ``class TestMyReg(DepthRegularizerPluginConformance): depth_regularizer = "myreg"``."""

    attr, depth_regularizer = "depth_regularizer", None
    _check = staticmethod(check_depth_regularizer_plugin)

    def test_build(self):
        self._run("build")

    def test_train_eval(self):
        self._run("train_eval")

    def test_rates(self):
        self._run("rates")

    def test_model(self):
        self._run("model")
