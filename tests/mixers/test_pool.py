"""PoolFormer's pool mixer and the identity mixer against numpy; the combinations they cannot join."""

import numpy as np
import pytest
import torch

import normlight


def avgpool3_np(g):
    """3x3 average, stride 1, padding 1, padding not counted (count_include_pad=False), per channel."""
    b, d, h, w = g.shape
    out = np.zeros_like(g)
    for i in range(h):
        for j in range(w):
            win = g[:, :, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
            out[:, :, i, j] = win.mean(axis=(2, 3))
    return out


def test_pool_mixer_is_avgpool_minus_identity_on_the_token_grid():
    x = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # 3x3 grid
    m = normlight.create_mixer("pool", 4)
    grid = x.numpy().transpose(0, 2, 1).reshape(2, 4, 3, 3)  # tokens in raster order, as the patch embedding
    want = (avgpool3_np(grid) - grid).reshape(2, 4, 9).transpose(0, 2, 1)
    np.testing.assert_allclose(m(x).numpy(), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="square grid"):
        m(torch.randn(2, 10, 4))


def test_identity_mixer_moves_nothing_between_tokens():
    x = torch.randn(2, 5, 4)
    m = normlight.create_mixer("identity", 4)
    assert torch.equal(m(x), x) and torch.equal(m(x, pos=x), 2 * x)


def test_pool_mixer_with_poolformers_groupnorm_trains_in_a_vit():
    model = normlight.create_model(
        "vit-tiny",
        depth=2,
        dim=32,
        num_heads=2,
        img_size=16,
        pool="mean",
        mixer="pool",
        norm="groupnorm",
        norm_kwargs={"num_groups": 1},
    )
    assert type(model.blocks[0].attn).__name__ == "PoolMixer" and not list(model.blocks[0].attn.parameters())
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert model.blocks[0].mlp.fc1.weight.grad is not None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(model="gpt-nano", mixer="pool"),
            r"mixer 'pool' cannot run in model 'gpt-nano' \(a causal language model\)",
        ),
        (dict(model="vit-tiny", mixer="pool"), r"mixer 'pool' mixes tokens on the patch grid, but pooling 'cls'"),
        (
            dict(model="vit-tiny", pool="mean", mixer="pool", placement="subln"),
            r"mixer 'pool' replaces attention, but placement SubLNBlock",
        ),
        (
            dict(model="vit-tiny", pool="mean", mixer="identity", qk_norm="rmsnorm"),
            r"qk_norm needs attention.*mixer 'identity'",
        ),
        (
            dict(model="gpt-nano", residual="gate", placement="ngpt"),
            r"residual 'gate' cannot apply to placement NGPTBlock",
        ),
        (dict(model="gpt-nano", readout="cls"), r"readout 'cls' reads a class token, which model 'gpt-nano'"),
    ],
)
def test_impossible_combinations_name_both_plugins(kwargs, message):
    with pytest.raises(normlight.NormlightError, match=message):
        # not kwargs.pop: the parametrized dict is shared, and a second run in the same process (mutmut) would fail
        kw = dict(kwargs)
        normlight.create_model(kw.pop("model"), depth=2, **kw)
