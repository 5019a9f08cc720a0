"""Attention poolings against numpy: Hopfield/learned-query attention, AttSets, multi-layer cross-attention."""

import numpy as np
import torch

import normlight


def softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def lin(layer, x):
    w = layer.weight.detach().double().numpy()
    b = layer.bias.detach().double().numpy()
    return x @ w.T + b


X = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_attn_is_one_learned_query_attention_step_per_head():
    torch.manual_seed(0)
    pool = normlight.create_pooling("attn", 8, num_heads=2).double()
    x = X.numpy()
    kv = lin(pool.kv, x)  # (B, T, 2D)
    k, v = kv[..., :8], kv[..., 8:]
    q = pool.query.detach().numpy()
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        a = softmax(np.einsum("d,btd->bt", q[sl], k[..., sl]) / np.sqrt(4), axis=1)  # beta = 1/sqrt(d_head)
        heads.append(np.einsum("bt,btd->bd", a, v[..., sl]))
    want = lin(pool.proj, np.concatenate(heads, -1))
    np.testing.assert_allclose(pool(X).detach().numpy(), want, rtol=1e-10, atol=1e-12)


def test_attn_channelwise_is_attsets():
    torch.manual_seed(0)
    pool = normlight.create_pooling("attn_channelwise", 8).double()
    x = X.numpy()
    a = softmax(lin(pool.score, x), axis=1)  # softmax over the set (tokens), separately per channel
    np.testing.assert_allclose(pool(X).detach().numpy(), (a * x).sum(1), rtol=1e-10, atol=1e-12)
    perm = X[:, torch.randperm(5)]  # permutation invariant
    torch.testing.assert_close(pool(perm), pool(X))


def test_multi_layer_attn_cross_attends_over_every_layer_with_layer_embeddings():
    torch.manual_seed(0)
    pool = normlight.create_pooling("multi_layer_attn", 8, num_layers=3, num_heads=2, num_queries=2).double()
    g = torch.Generator().manual_seed(1)
    hs = [torch.randn(2, 5, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    h = np.stack([t.numpy() for t in hs], 1) + pool.layer_emb.detach().numpy()[None, :, None, :]
    kv = lin(pool.kv, h.reshape(2, 15, 8))
    k, v = kv[..., :8], kv[..., 8:]
    q = pool.queries.detach().numpy()  # (Q, D)
    heads = []
    for hh in range(2):
        sl = slice(4 * hh, 4 * hh + 4)
        a = softmax(np.einsum("qd,btd->bqt", q[:, sl], k[..., sl]) / 2.0, axis=-1)
        heads.append(np.einsum("bqt,btd->bqd", a, v[..., sl]))
    want = lin(pool.proj, np.concatenate(heads, -1).mean(1))
    np.testing.assert_allclose(pool(hs[-1], hidden_states=hs).detach().numpy(), want, rtol=1e-10, atol=1e-12)
    assert pool.norm_position == "post" and pool.needs_hidden_states
