"""normlight.testing: every contract check reports its violation with the kit's message, and passes good plugins."""

import functools

import pytest
import torch

from normlight.testing import (  # noqa: E402
    NORM_CHECKS,
    ConformanceError,
    ConformanceWarning,
    NormPluginConformance,
    PlacementPluginConformance,
    check_norm_plugin,
    check_placement_plugin,
)
from tests.testing import bad_plugins as bp

# (plugin, the check that must report it, words of the problem, words of the fix)
NORM_VIOLATIONS = [
    (bp.NotAModule, "build", "returned NotAModule", "return an nn.Module"),
    (bp.FlattensPositions, "shape", "it returned (2, 12, 16)", "tensor of the input's shape"),
    (bp.ReturnsFloat32, "dtypes", "it returned torch.float32", "cast the result back to x.dtype"),
    (bp.IgnoresLayout, "channels_first", "failed on a probe input of shape (2, 16, 3, 3)", "drop `layout`"),
    (bp.WrongLayoutAxes, "channels_first", "differs from the norm applied to the channels-last view", "same result"),
    (bp.UnusedParameter, "gradients", "parameter 'unused' received no gradient", "DistributedDataParallel"),
    (bp.PlainAttributeState, "state_dict", "eval output differs", "register_buffer"),
    (bp.HoldsLambda, "copy", "deepcopy/pickle of the module failed", "no lambdas"),
    (bp.RejectsSites, "context", "KeyError", "context keywords it names"),
    (bp.EvalCounter, "train_eval", "an eval forward changed ['calls']", "only when self.training"),
    (bp.UndeclaredBatchStats, "train_eval", "does not declare them", "uses_batch_statistics = True"),
    (bp.NoBatchStatAttribute, "batch_statistics", "`batch_stat` is None", "self.batch_stat"),
    (bp.IgnoresMask, "batch_statistics", "depend on the values at padded positions", "mask is True"),
]


@pytest.mark.parametrize("plugin, check, problem, fix", NORM_VIOLATIONS, ids=[v[0].__name__ for v in NORM_VIOLATIONS])
def test_each_norm_violation_gets_the_kits_message(plugin, check, problem, fix):
    with pytest.raises(ConformanceError) as info:
        check_norm_plugin(plugin, 16)
    msg = str(info.value)
    assert f"fails the '{check}' check" in msg and problem in msg and "fix: " in msg and fix in msg, msg
    assert plugin.__name__ in msg  # names the plugin at fault


def test_checks_cover_every_contract_point():
    reported = {v[1] for v in NORM_VIOLATIONS} | {"distributed"}
    assert reported == set(NORM_CHECKS)


@pytest.mark.distributed
def test_unsynced_batch_statistics_fail_the_two_rank_gloo_check():
    with pytest.raises(
        ConformanceError,
        match=r"fails the 'distributed' check: 2 ranks on half batches give "
        r"different outputs(.|\n)*all-reduce the per-channel sums",
    ):
        check_norm_plugin(bp.NoSync, 8, checks=["distributed"])


def test_distributed_check_needs_an_importable_factory():
    with pytest.raises(ConformanceError, match="cannot be re-imported in a worker process"):
        check_norm_plugin(functools.partial(bp.NoSync), 8, checks=["distributed"])


def test_good_plugins_pass_and_a_missing_mask_is_only_a_warning():
    check_norm_plugin(bp.GoodNorm, 16)
    check_norm_plugin(torch.nn.LayerNorm, 16)  # a torch class qualifies as it is
    check_norm_plugin(functools.partial(bp.GoodNorm, eps=1e-3), 16, sites=("qk", "final"))

    class NoMask(bp._BatchStatBase):
        def forward(self, x):
            return super().forward(x)

    with pytest.warns(ConformanceWarning, match="no `mask` parameter"):
        check_norm_plugin(NoMask, 16, skip=["copy"])  # a local class cannot be pickled; skip that check


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown conformance checks"):
        check_norm_plugin(bp.GoodNorm, checks=["shapes"])
    with pytest.raises(ConformanceError, match="cannot resolve norm 'no_such_norm'"):
        check_norm_plugin("no_such_norm")


PLACEMENT_VIOLATIONS = [
    (bp.NotABlock, "subclass of normlight.blocks"),
    (bp.NoDiagram, "fails the 'block_class' check: the class has no docstring drawing its data flow"),
    (bp.PeeksAhead, "fails the 'gpt' check: changing the last token changed the logits of earlier positions"),
    (bp.Explodes, "fails the 'gpt' check: the model's output at init is not finite"),
]


@pytest.mark.parametrize("block, message", PLACEMENT_VIOLATIONS, ids=[v[0].__name__ for v in PLACEMENT_VIOLATIONS])
def test_each_placement_violation_gets_the_kits_message(block, message):
    with pytest.raises(ConformanceError, match=message):
        check_placement_plugin(block)


# the pytest base classes, on built-ins and a test-defined plugin
class TestGoodNormThroughTheBaseClass(NormPluginConformance):
    norm = bp.GoodNorm
    options = {"eps": 1e-4}


class TestPrePlacementThroughTheBaseClass(PlacementPluginConformance):
    placement = "pre"
    norm = "rmsnorm"
