"""Every batch-statistic norm: the papers' initial values, flags and a state_dict round trip."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import normlight
from tests.norms.reference import rand

INITS = {  # name, options -> expected initial tensors (parameters 1/0 as in the papers, running stats)
    "batchnorm": ({}, {"weight": 1, "bias": 0, "running_mean": 0, "running_var": 1}),
    "powernorm": ({}, {"weight": 1, "bias": 0, "running_phi": 1, "ema_gz": 0, "iters": 0}),
    "unifiednorm": ({}, {"weight": 1, "bias": 0, "running_var": 1, "ema_gz": 0, "buffer_x2": 0, "buffer_gz": 0}),
    "repbn": ({}, {"alpha": 1, "bn.weight": 1, "bn.bias": 0, "bn.running_var": 1}),
    "prepbn": ({}, {"norm1.weight": 1, "norm1.bias": 0, "norm2.alpha": 1, "warm": 0, "iter": 60000}),
    "bcn": ({"num_groups": 4}, {"weight": 1, "bias": 0, "bn.weight": 1, "bn.bias": 0, "bn.running_var": 1}),
    "evonorm_b0": ({}, {"weight": 1, "bias": 0, "v": 1, "running_var": 1}),
    "evonorm_s0": ({"num_groups": 4}, {"weight": 1, "bias": 0, "v": 1}),
}


@pytest.mark.parametrize("name", sorted(INITS))
def test_init_flags_and_state_dict_round_trip(name):
    options, expected = INITS[name]
    m = normlight.create_norm(name, 8, **options)
    state = m.state_dict()
    for key, value in expected.items():
        assert torch.all(state[key] == value), f"{name}.{key} initial value"
    assert isinstance(m.description, str) and isinstance(m.paper, str)
    assert m.uses_batch_statistics is (name != "evonorm_s0")
    x = rand(4, 3, 8, seed=250)
    m(x).sum().backward()
    if m.uses_batch_statistics:
        assert m.batch_stat.shape == (8,) and m.running_stat.shape == (8,) and not m.batch_stat.requires_grad
    clone = normlight.create_norm(name, 8, **options)
    clone.load_state_dict(m.state_dict())
    clone.eval(), m.eval()
    torch.testing.assert_close(clone(x), m(x))
    torch.testing.assert_close(pickle.loads(pickle.dumps(m))(x), m(x))
    torch.testing.assert_close(copy.deepcopy(m)(x), m(x))


def test_batch_statistic_checks_say_what_is_wrong():
    from normlight.norms import _batchstats as bs
    from normlight.norms._common import check_layout

    bs.require_values("batchnorm", 2)  # two values per channel are enough for a batch variance
    with pytest.raises(
        ValueError, match=r"^bcn: expected an input of shape \(N, C, \*spatial\) with C=3, got \(2, 4, 5\)$"
    ):
        bs.check_input("bcn", torch.zeros(2, 4, 5), 3, None, channels_first=True)
    with pytest.raises(ValueError, match=r"^bcn: expected an input of shape \(\.\.\., C\) with C=3, got \(2, 4, 5\)$"):
        bs.check_input("bcn", torch.zeros(2, 4, 5), 3, None)
    x = torch.zeros(2, 3, 4, 5)  # channels-first: the mask is (N, *spatial) = (2, 4, 5)
    assert bs.check_input("bcn", x, 3, torch.ones(2, 4, 5), channels_first=True).dtype == torch.bool
    with pytest.raises(
        ValueError, match=r"^bcn: mask must have the input's shape without the feature dim, \(2, 4, 5\), got \(2, 3\)"
    ):
        bs.check_input("bcn", x, 3, torch.ones(2, 3, dtype=torch.bool), channels_first=True)
    assert "groupnorm with weight standardization" in bs.micro_batch_hint("bcn")
    assert "bcn" not in bs.micro_batch_hint("bcn (batch-channel norm)")
    with pytest.raises(ValueError, match=r"^layout must be 'channels_last' or 'channels_first', got 'nhwc'$"):
        check_layout("nhwc")


def test_shared_checks_on_edge_inputs():
    from normlight.norms import _batchstats as bs
    from normlight.norms._common import check_features

    check_features(torch.zeros(4), 4, "layernorm")  # a single vector is a valid input
    with pytest.raises(ValueError, match=r"^layernorm was built for 4 features but got an input of shape \(\) .*=\?$"):
        check_features(torch.tensor(1.0), 4, "layernorm")
    with pytest.raises(ValueError, match=r"build it with num_features=6$"):
        check_features(torch.zeros(2, 6), 4, "layernorm")
    # the mask follows the input's device (meta here: the one other device on a CPU-only machine)
    x = torch.empty(2, 3, 4, device="meta")
    assert bs.check_input("batchnorm", x, 4, torch.ones(2, 3)).device == x.device
    assert bs.micro_batch_hint("bcn") == (
        "use a larger batch, or groupnorm with weight standardization, evonorm_s0, or a normalization-free (nf) model"
    )
