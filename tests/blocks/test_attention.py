"""Attention against an independent numpy formula; diagnostics mode; RoPE; QK-norm; NormFormer head scale."""

import math

import numpy as np
import pytest
import torch

import normlight
from normlight.blocks import MLP, Attention, RotaryEmbedding


def np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_attention(attn, x, causal, head_scale=None, fairseq_order=False, scale=None):
    """Multi-head attention written out in numpy from the fused qkv / out_proj weights."""
    W, b = attn.qkv.weight.detach().double().numpy(), attn.qkv.bias.detach().double().numpy()
    Wo, bo = attn.out_proj.weight.detach().double().numpy(), attn.out_proj.bias.detach().double().numpy()
    x = x.double().numpy()
    B, T, D = x.shape
    H = attn.num_heads
    hd = D // H
    qkv = x @ W.T + b
    q, k, v = (qkv[..., i * D : (i + 1) * D].reshape(B, T, H, hd).transpose(0, 2, 1, 3) for i in range(3))
    logits = q @ k.transpose(0, 1, 3, 2) * (1 / math.sqrt(hd) if scale is None else scale)
    if causal:
        logits = np.where(np.tril(np.ones((T, T))) > 0, logits, -np.inf)
    heads = np_softmax(logits) @ v  # (B,H,T,hd)
    if head_scale is not None and not fairseq_order:
        heads = heads * np.asarray(head_scale)[None, :, None, None]
    out = heads.transpose(0, 2, 1, 3).reshape(B, T, D) @ Wo.T + bo
    if head_scale is not None and fairseq_order:  # fairseq: scale heads of the projected output
        out = (out.reshape(B, T, H, hd) * np.asarray(head_scale)[None, None, :, None]).reshape(B, T, D)
    return out, logits


@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_numpy_and_diagnostics_mode(causal):
    torch.manual_seed(0)
    attn = Attention(12, 3, causal=causal).eval()
    x = torch.randn(2, 6, 12)
    expect, logits = np_attention(attn, x, causal)
    fast = attn(x)
    assert attn.last_attn_probs is None and attn.last_max_logit is None  # fast path stores nothing
    assert np.allclose(fast.detach().numpy(), expect, atol=1e-5)
    attn.record_attention = True
    slow = attn(x)
    assert np.allclose(slow.detach().numpy(), expect, atol=1e-5)
    probs = attn.last_attn_probs
    assert probs.shape == (2, 3, 6, 6) and not probs.requires_grad and attn.causal is causal
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3, 6), atol=1e-6)
    if causal:
        assert probs.triu(1).abs().max() == 0
    assert math.isclose(attn.last_max_logit.item(), float(logits.max()), rel_tol=1e-5)


def test_rope_matches_numpy():
    torch.manual_seed(0)  # the relative check below needs a q.k away from 0
    hd, T, base = 8, 5, 10000.0
    x = torch.randn(1, 2, T, hd)
    y = RotaryEmbedding(hd, 16)(x).numpy()
    xn = x.numpy()
    for t in range(T):
        for i in range(hd // 2):
            th = t * base ** (-2 * i / hd)
            a, b = xn[..., t, i], xn[..., t, i + hd // 2]
            assert np.allclose(y[..., t, i], a * math.cos(th) - b * math.sin(th), atol=1e-5)
            assert np.allclose(y[..., t, i + hd // 2], b * math.cos(th) + a * math.sin(th), atol=1e-5)
    # relative: q.k after rope depends only on the offset
    q, k = torch.randn(hd), torch.randn(hd)
    rope = RotaryEmbedding(hd, 16)
    rot = lambda v, t: rope(v.expand(1, 1, t + 1, hd).contiguous())[0, 0, t]
    assert math.isclose(rot(q, 3) @ rot(k, 1), rot(q, 7) @ rot(k, 5), rel_tol=1e-4)


def test_qk_norm_is_per_head_over_head_dim():
    blk = normlight.get_placement("pre")(16, 2, qk_norm=torch.nn.LayerNorm, norm=torch.nn.LayerNorm)
    assert blk.attn.q_norm.normalized_shape == (8,) and blk.attn.k_norm.normalized_shape == (8,)
    x = torch.randn(1, 4, 16)
    q, k, _ = blk.attn.project(x)
    assert torch.allclose(q.mean(-1), torch.zeros(1, 2, 4), atol=1e-5)  # normalized per head
    # scaling one head's q rows changes nothing after per-head LN (a full-width LN would change)
    with torch.no_grad():
        blk.attn.qkv.weight[:8] *= 10
        blk.attn.qkv.bias[:8] *= 10
    q2, _, _ = blk.attn.project(x)
    assert torch.allclose(q, q2, atol=1e-4)


def test_normformer_head_scale_uses_paper_ordering():
    torch.manual_seed(0)
    blk = normlight.get_placement("normformer")(12, 3, norm=torch.nn.LayerNorm)
    attn = blk.attn.eval()
    with torch.no_grad():
        attn.head_scale.copy_(torch.tensor([2.0, 1.0, 0.5]))
    x = torch.randn(2, 4, 12)
    paper, _ = np_attention(attn, x, False, head_scale=[2.0, 1.0, 0.5])
    fairseq, _ = np_attention(attn, x, False, head_scale=[2.0, 1.0, 0.5], fairseq_order=True)
    got = attn(x).detach().numpy()
    assert np.allclose(got, paper, atol=1e-5) and not np.allclose(got, fairseq, atol=1e-2)
    assert attn.head_scale.shape == (3,)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown mlp activation 'tanh'"):
        MLP(4, 8, act="tanh")
    with pytest.raises(ValueError, match="dim 10 is not divisible by num_heads 3"):
        Attention(10, 3)


def test_rope_any_leading_dims_bf16_and_no_saved_tables():
    rope = RotaryEmbedding(8, 16)
    x = torch.randn(5, 8)  # (T, hd): positions are the second-to-last dim whatever the leading dims
    assert torch.allclose(rope(x), rope(x[None, None])[0, 0])
    y = rope(x.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), rope(x), atol=0.05)
    # the cos/sin tables are recomputed, not checkpointed: a checkpoint loads at any max_seq_len
    assert rope.state_dict() == {}
    with pytest.raises(ValueError, match="RoPE needs an even head_dim, got 5"):
        RotaryEmbedding(5, 16)


class TaggedNorm(torch.nn.Module):
    """Parameter-free LayerNorm that keeps its site and its ``tag`` option."""

    def __init__(self, num_features, site=None, tag=None):
        super().__init__()
        self.num_features, self.site, self.tag = num_features, site, tag

    def forward(self, x):
        return torch.nn.functional.layer_norm(x, (self.num_features,))


def test_qk_norm_uses_its_own_spec_options_and_site():
    blk = normlight.get_placement("pre")(
        16, 2, norm=torch.nn.LayerNorm, norm_kwargs={"eps": 1e-3}, qk_norm=TaggedNorm, qk_norm_kwargs={"tag": "qk"}
    )
    for m in (blk.attn.q_norm, blk.attn.k_norm):
        assert isinstance(m, TaggedNorm) and (m.num_features, m.site, m.tag) == (8, "qk", "qk")
    assert blk.norm1.eps == 1e-3


def test_rope_default_base_at_a_far_position():
    """base 10000 (RoFormer's default): at position 400 the angles t * base^(-2i/hd) are large enough that
    another base shows (10001 moves the i=1 angle by 1e-3 rad; the float32 table rounds angles by < 2e-5)."""
    hd, t = 8, 400
    x = torch.randn(1, 1, t + 1, hd, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = RotaryEmbedding(hd, t + 1).double()(x)[0, 0, t].numpy()
    a, b = x[0, 0, t, : hd // 2].numpy(), x[0, 0, t, hd // 2 :].numpy()
    th = t * 10000.0 ** (-2 * np.arange(hd // 2) / hd)
    assert np.allclose(y, np.concatenate([a * np.cos(th) - b * np.sin(th), b * np.cos(th) + a * np.sin(th)]), atol=1e-4)


def test_attention_defaults_scale_and_rope_option():
    """Defaults: not causal, no dropout (train mode is deterministic), no head scale, no RoPE, fast path; ``scale``
    replaces 1/sqrt(head_dim); ``rope=True`` rotates q and k over a 1024-position table."""
    torch.manual_seed(0)
    attn = Attention(12, 3).train()
    x = torch.randn(2, 6, 12)
    expect, _ = np_attention(attn, x, causal=False)
    assert np.allclose(attn(x).detach().numpy(), expect, atol=1e-5)
    assert attn.head_scale is None and attn.rope is None and attn.record_attention is False
    scaled = Attention(12, 3, scale=0.3)  # not 1/sqrt(head_dim) = 0.5
    scaled.load_state_dict(attn.state_dict())
    assert np.allclose(scaled(x).detach().numpy(), np_attention(attn, x, causal=False, scale=0.3)[0], atol=1e-5)
    pos = torch.randn(1, 6, 12)  # LaPE: added to the input
    assert np.allclose(attn(x, pos).detach().numpy(), np_attention(attn, x + pos, causal=False)[0], atol=1e-5)
    roped = Attention(12, 3, rope=True)
    roped.load_state_dict(attn.state_dict())
    q, k, v = attn.project(x)
    rq, rk, rv = roped.project(x)
    rope = RotaryEmbedding(4, 1024)
    assert torch.allclose(rq, rope(q)) and torch.allclose(rk, rope(k)) and torch.equal(rv, v)
    assert roped.rope.cos.shape == (1024, 4)


@pytest.mark.parametrize("record", [False, True])
def test_attention_dropout_only_in_training_and_scale_on_both_paths(record):
    torch.manual_seed(0)
    attn = Attention(12, 3, dropout=0.5, scale=0.3)
    attn.record_attention = record
    attn.resid_dropout = torch.nn.Identity()  # only the attention-probability dropout left
    x = torch.randn(2, 6, 12)
    assert not torch.allclose(attn(x), attn(x))  # training: probabilities dropped, differently each call
    attn.eval()
    expect, _ = np_attention(attn, x, causal=False, scale=0.3)
    assert np.allclose(attn(x).detach().numpy(), expect, atol=1e-5)


def test_recording_path_in_bf16():
    torch.manual_seed(0)
    attn = Attention(12, 3, causal=True).eval()
    x = torch.randn(2, 6, 12)
    ref = attn(x)
    attn = attn.to(torch.bfloat16)
    attn.record_attention = True
    out = attn(x.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), ref, atol=0.05)
    assert attn.last_attn_probs.dtype == torch.bfloat16
