"""Each placement: order and sites of norm calls around attention/MLP, and the residual formula.

A recording norm (defined here) logs its site on every call; attention and MLP log entry/exit. The
block output is then compared with the placement's formula written out here from the papers
(reference norms.md sec 7, 9b, 9c), composed from the block's own sublayers.
"""

import math

import pytest
import torch
from torch import nn

import normlight

LOG: list[str] = []


class RecordingNorm(nn.Module):
    """Parameter-free LayerNorm that records its site on every call."""

    def __init__(self, num_features, site=None, layer_idx=None, num_layers=None):
        super().__init__()
        self.site = site

    def forward(self, x):
        LOG.append(self.site)
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)


def make_block(name, layer_idx=0, num_layers=4, **kw):
    cls = normlight.get_placement(name)
    blk = cls(16, 2, layer_idx=layer_idx, num_layers=num_layers, norm=RecordingNorm, causal=True, **kw)
    blk.attn.register_forward_pre_hook(lambda m, a: LOG.append("attn"))
    blk.attn.register_forward_hook(lambda m, a, o: LOG.append("/attn"))
    blk.mlp.register_forward_pre_hook(lambda m, a: LOG.append("mlp"))
    blk.mlp.register_forward_hook(lambda m, a, o: LOG.append("/mlp"))
    return blk


PRE = ["attn_in", "attn", "/attn", "mlp_in", "mlp", "/mlp"]
POST = ["attn", "/attn", "attn_in", "mlp", "/mlp", "mlp_in"]
PERI = ["attn_in", "attn", "/attn", "attn_out", "mlp_in", "mlp", "/mlp", "mlp_out"]
BARE = ["attn", "/attn", "mlp", "/mlp"]
ORDERS = {
    ("pre", 0): PRE,
    ("post", 0): POST,
    ("peri", 0): PERI,
    ("sandwich", 0): PERI,
    ("mix", 0): POST,
    ("mix", 1): PRE,
    ("lns", 2): PRE,
    ("none", 0): BARE,
    ("normformer", 0): ["attn_in", "attn", "/attn", "attn_out", "mlp_in", "mlp", "mlp_mid", "/mlp"],
    ("deepnorm", 0): POST,
    ("subln", 0): ["attn_in", "attn", "attn_out", "/attn", "mlp_in", "mlp", "mlp_mid", "/mlp"],
    ("hybrid", 0): ["attn", "qk", "qk", "qk", "/attn", "mlp_in", "mlp", "/mlp"],
    ("rezero", 0): BARE,
    ("skipinit", 0): BARE,
    ("ngpt", 0): BARE,
}


def test_every_registered_builtin_placement_is_covered():
    builtin = {e.name for e in normlight.plugins.entries("placements") if e.dist == "normlight"}
    assert builtin == {p for p, _ in ORDERS}


@pytest.mark.parametrize("name,layer_idx", list(ORDERS))
def test_norm_call_order_and_sites(name, layer_idx):
    blk = make_block(name, layer_idx)
    LOG.clear()
    blk(torch.randn(2, 5, 16))
    assert LOG == ORDERS[(name, layer_idx)]


def test_hybrid_star_first_block_is_pre_norm():
    LOG.clear()
    make_block("hybrid", 0, star=True)(torch.randn(2, 5, 16))
    assert LOG == ["attn_in", "attn", "qk", "qk", "qk", "/attn", "mlp_in", "mlp", "/mlp"]
    LOG.clear()
    make_block("hybrid", 1, star=True)(torch.randn(2, 5, 16))
    assert LOG == ORDERS[("hybrid", 0)]


def ln(x):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)


# the papers' block formulas, with A = attention, M = MLP (each including its internal norms)
FORMULAS = {
    "pre": lambda b, x, A, M: (h := x + A(ln(x))) + M(ln(h)),
    "post": lambda b, x, A, M: ln((h := ln(x + A(x))) + M(h)),
    "peri": lambda b, x, A, M: (h := x + ln(A(ln(x)))) + ln(M(ln(h))),
    "sandwich": lambda b, x, A, M: (h := x + ln(A(ln(x)))) + ln(M(ln(h))),
    "mix": lambda b, x, A, M: ln((h := ln(x + A(x))) + M(h)),  # layer 0 of 4: Post-LN
    "lns": lambda b, x, A, M: (h := x + A(ln(x) / math.sqrt(3))) + M(ln(h) / math.sqrt(3)),  # layer_idx 2
    "none": lambda b, x, A, M: (h := x + A(x)) + M(h),
    "normformer": lambda b, x, A, M: (h := x + ln(A(ln(x)))) + M(ln(h)),
    "deepnorm": lambda b, x, A, M: ln((8**0.25) * (h := ln(8**0.25 * x + A(x))) + M(h)),  # (2N)^(1/4), N=4
    "subln": lambda b, x, A, M: (h := x + A(ln(x))) + M(ln(h)),
    "hybrid": lambda b, x, A, M: (h := ln(x + A(x))) + M(h),
    "rezero": lambda b, x, A, M: (h := x + 0.3 * A(x)) + 0.3 * M(h),
    "skipinit": lambda b, x, A, M: (h := x + 0.3 * A(x)) + 0.7 * M(h),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_block_matches_paper_formula(name):
    torch.manual_seed(0)
    blk = make_block(name, layer_idx=2 if name == "lns" else 0)
    with torch.no_grad():
        for p in blk.parameters():  # generic values so that gains and scales are visible
            if p.dim() == 0:
                p.fill_(0.3)
        if name == "skipinit":
            blk.mlp_gain.fill_(0.7)
    x = torch.randn(2, 5, 16)
    pos = torch.randn(1, 5, 16)  # LaPE: the block hands pos to its attention, which adds it to its input
    expect = FORMULAS[name](blk, x, lambda h: blk.attn(h, pos), blk.mlp)
    assert torch.allclose(blk(x, pos), expect, atol=1e-5)


def test_hybrid_star_first_block_matches_pre_norm_formula():
    torch.manual_seed(0)
    blk = make_block("hybrid", 0, star=True)
    x, pos = torch.randn(2, 5, 16), torch.randn(1, 5, 16)
    expect = FORMULAS["pre"](blk, x, lambda h: blk.attn(h, pos), blk.mlp)
    assert torch.allclose(blk(x, pos), expect, atol=1e-5)


def test_normformer_residual_scale_weights_the_mlp_residual():
    """scale_resids=True (fairseq's w_resid, init 1): h * w_resid + M(ln(h)); off by default."""
    assert make_block("normformer").resid_scale is None
    torch.manual_seed(0)
    blk = make_block("normformer", scale_resids=True)
    assert torch.equal(blk.resid_scale, torch.ones(16))
    with torch.no_grad():
        blk.resid_scale.uniform_(0.5, 2.0)
    x = torch.randn(2, 5, 16)
    h = x + ln(blk.attn(ln(x)))
    assert torch.allclose(blk(x), h * blk.resid_scale + blk.mlp(ln(h)), atol=1e-5)


def generic_block(name, **kw):
    """A block whose scalar gates are 0.3 (not 0, where ReZero/SkipInit are the identity)."""
    torch.manual_seed(0)
    blk = normlight.get_placement(name)(16, 2, layer_idx=0, num_layers=4, norm=nn.LayerNorm, **kw)
    with torch.no_grad():
        for p in blk.parameters():
            if p.dim() == 0:
                p.fill_(0.3)
    return blk


@pytest.mark.parametrize("name", sorted({p for p, _ in ORDERS}))
def test_causal_block_output_ignores_later_tokens(name):
    blk = generic_block(name, causal=True).eval()
    x = torch.randn(1, 5, 16)
    y = x.clone()
    y[:, -1] += 1.0
    a, b = blk(x), blk(y)
    assert torch.allclose(a[:, :-1], b[:, :-1], atol=1e-6) and not torch.allclose(a[:, -1], b[:, -1], atol=1e-3)


@pytest.mark.parametrize("name", sorted({p for p, _ in ORDERS}))
def test_bf16_stream_stays_bf16(name):
    """A bf16 residual stream stays bf16 under bf16 autocast with float32 parameters (Lightning's "bf16-mixed": no
    float32 scale may promote it) and in a bf16 block ("bf16-true"); both match the float32 block."""
    blk = generic_block(name, scale_resids=True) if name == "normformer" else generic_block(name)
    x = torch.randn(2, 5, 16)
    ref = blk(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = blk(x.bfloat16())
    true = blk.to(torch.bfloat16)(x.bfloat16())
    for out in (mixed, true):
        assert out.dtype == torch.bfloat16
        assert torch.allclose(out.float(), ref, atol=0.1, rtol=0.05)


def test_mix_layers_follow_floor_of_fraction():
    is_post = lambda L, f=0.25: [
        normlight.get_placement("mix")(16, 2, layer_idx=i, num_layers=L, norm=RecordingNorm, post_fraction=f).is_post
        for i in range(L)
    ]
    assert is_post(12) == [True] * 3 + [False] * 9
    assert is_post(10) == [True] * 2 + [False] * 8  # floor(2.5) = 2, not ceil
    assert is_post(4, 0.5) == [True, True, False, False]
    with pytest.raises(ValueError, match="post_fraction"):
        is_post(4, 1.5)


def test_mix_late_layer_is_pre_ln():
    blk = make_block("mix", layer_idx=1)
    x, pos = torch.randn(2, 5, 16), torch.randn(1, 5, 16)
    assert torch.allclose(blk(x, pos), FORMULAS["pre"](blk, x, lambda h: blk.attn(h, pos), blk.mlp), atol=1e-5)


@pytest.mark.parametrize("name", sorted({p for p, _ in ORDERS}))
def test_placement_documents_its_data_flow_and_source(name):
    cls = normlight.get_placement(name)
    assert "──" in cls.__doc__  # an ASCII data-flow diagram
    assert cls.paper and cls.__doc__.splitlines()[0].strip()
