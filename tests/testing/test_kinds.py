"""The conformance kit of the new plugin kinds: every built-in passes, and broken plugins fail the right check."""

import pytest
import torch
from torch import nn

import normlight
from normlight.testing import (
    ConformanceError,
    DepthRegularizerPluginConformance,
    MixerPluginConformance,
    PoolingPluginConformance,
    ResidualPluginConformance,
    check_depth_regularizer_plugin,
    check_mixer_plugin,
    check_pooling_plugin,
    check_residual_plugin,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", normlight.list_poolings())
def test_builtin_poolings_conform(name):
    check_pooling_plugin(name)


@pytest.mark.parametrize("name", normlight.list_residuals())
def test_builtin_residuals_conform(name):
    check_residual_plugin(name)


@pytest.mark.parametrize("name", normlight.list_mixers())
def test_builtin_mixers_conform(name):
    check_mixer_plugin(name)


@pytest.mark.parametrize("name", normlight.list_depth_regularizers())
def test_builtin_depth_regularizers_conform(name):
    check_depth_regularizer_plugin(name)


class CrossBatchPool(nn.Module):
    """Leaks statistics across the batch: mean over batch and tokens."""

    def __init__(self, dim):
        super().__init__()

    def forward(self, x):
        return x.mean(dim=1) + x.mean(dim=(0, 1))


class FutureMixer(nn.Module):
    """Claims to be causal but averages every token (a leak)."""

    supports_causal = True

    def __init__(self, dim):
        super().__init__()

    def forward(self, x, pos=None):
        return x.mean(dim=1, keepdim=True).expand_as(x)


class UnusedParamResidual(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.unused = nn.Parameter(torch.ones(()))

    def forward(self, x, branch):
        return x + branch


class RandomInEval(nn.Module):
    def forward(self, x, h):
        return x + torch.rand(()) * (h - x)


@pytest.mark.parametrize(
    "check, spec, match",
    [
        (check_pooling_plugin, CrossBatchPool, "'batch_independence' check"),
        (check_mixer_plugin, FutureMixer, "'causal' check"),
        (check_residual_plugin, UnusedParamResidual, "parameter 'unused' gets no finite gradient"),
        (check_depth_regularizer_plugin, RandomInEval, "two eval calls differ"),
    ],
)
def test_broken_plugins_fail_with_the_check_and_a_fix(check, spec, match):
    with pytest.raises(ConformanceError, match=match) as info:
        check(spec)
    assert "fix:" in str(info.value)


class TestGemAsAPluginAuthorWould(PoolingPluginConformance):
    pooling = "ggem"
    options = {"groups": 4}


class TestGate(ResidualPluginConformance):
    residual = "gate"


class TestPoolMixer(MixerPluginConformance):
    mixer = "pool"


class TestLayerSkip(DepthRegularizerPluginConformance):
    depth_regularizer = "layerskip"
    options = {"early_exit_scale": 0.5}
