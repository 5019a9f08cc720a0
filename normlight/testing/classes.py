"""pytest base classes: subclass with a name starting with ``Test``; each contract check becomes one test."""

from __future__ import annotations

from typing import Any

from normlight.testing.common import DEFAULT_CONTEXT, DEFAULT_DTYPES, SITES, ConformanceError
from normlight.testing.norms import check_norm_plugin
from normlight.testing.placements import check_placement_plugin


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
