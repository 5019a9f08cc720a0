"""The MLP (gelu, relu, swiglu) against an independent numpy formula."""

import math

import numpy as np
import pytest
import torch

from normlight.blocks import MLP


@pytest.mark.parametrize("act", ["gelu", "relu", "swiglu"])
def test_mlp_matches_numpy(act):
    torch.manual_seed(0)
    mlp = MLP(6, 10, act=act)
    x = torch.randn(3, 6)
    W1, b1 = mlp.fc1.weight.detach().double().numpy(), mlp.fc1.bias.detach().double().numpy()
    W2, b2 = mlp.fc2.weight.detach().double().numpy(), mlp.fc2.bias.detach().double().numpy()
    h = x.double().numpy() @ W1.T + b1
    if act == "swiglu":
        gate, up = h[:, :10], h[:, 10:]
        h = gate / (1 + np.exp(-gate)) * up
    elif act == "relu":
        h = np.maximum(h, 0)
    else:
        from math import erf

        h = 0.5 * h * (1 + np.vectorize(erf)(h / math.sqrt(2)))
    assert np.allclose(mlp(x).detach().numpy(), h @ W2.T + b2, atol=1e-5)


def test_gelu_tanh_is_gpt2s_gelu_new():
    """mlp="gelu_tanh": 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3))) (GPT-2's gelu_new), not the erf GELU."""
    torch.manual_seed(0)
    mlp = MLP(6, 10, act="gelu_tanh").double()
    x = torch.randn(3, 6, dtype=torch.float64) * 3
    h = x.numpy() @ mlp.fc1.weight.detach().numpy().T + mlp.fc1.bias.detach().numpy()
    a = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    expected = a @ mlp.fc2.weight.detach().numpy().T + mlp.fc2.bias.detach().numpy()
    assert np.abs(mlp(x).detach().numpy() - expected).max() < 1e-12
    exact = MLP(6, 10, act="gelu").double()
    exact.load_state_dict(mlp.state_dict())
    assert (exact(x) - mlp(x)).abs().max() > 1e-5  # the two GELUs are distinguishable


def test_mlp_defaults_bias_switch_and_error():
    """Defaults: exact (erf) GELU with biases; ``bias=False`` removes both biases; a bad activation lists the choices."""
    torch.manual_seed(0)
    mlp = MLP(6, 10)
    assert mlp.fc1.bias is not None and mlp.fc2.bias is not None
    ref = MLP(6, 10, act="gelu")
    ref.load_state_dict(mlp.state_dict())
    x = torch.randn(3, 6)
    assert torch.equal(mlp(x), ref(x))
    bare = MLP(6, 10, bias=False)
    assert bare.fc1.bias is None and bare.fc2.bias is None
    with pytest.raises(ValueError, match="choose one of gelu, gelu_tanh, relu, swiglu$"):
        MLP(6, 10, act="tanh")


def test_swiglu_splits_the_feature_dim_of_token_sequences():
    """On (B, T, D) input the gate/up split is over features, as on (N, D): each token as its own row."""
    torch.manual_seed(0)
    mlp = MLP(6, 10, act="swiglu")
    x = torch.randn(2, 3, 6)
    assert torch.allclose(mlp(x), mlp(x.reshape(6, 6)).reshape(2, 3, 6), atol=1e-6)
