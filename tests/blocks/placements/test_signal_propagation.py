"""Signal propagation at init (no training), depths 4..64, in the direction the papers report.

- Pre-LN: residual-stream variance grows ~linearly with depth; LayerNorm Scaling tames it to ~log growth
  (Sun et al. 2025, "The Curse of Depth").
- Post-LN washes the input out of the stream (cosine(x_0, x_L) -> 0); DeepNorm's up-weighted residual and
  beta-scaled init keep the stream close to its input (Wang et al. 2022, bounded updates).
Both Pre/LNS and the Post-LN baseline use the standard Transformer init (xavier_normal, gain 1, no depth
scaling) as in those papers; DeepNorm uses its own init hook.
"""

import pytest
import torch
from torch import nn

import normlight

DEPTHS = (4, 16, 64)


def stack(placement, depth, xavier=True):
    torch.manual_seed(0)
    model = normlight.create_model(
        "gpt-nano", depth=depth, dim=32, num_heads=2, max_seq_len=16, norm=nn.LayerNorm, placement=placement
    )
    if xavier:
        with torch.no_grad():
            for b in model.blocks:
                for w in (*b.attn.qkv.weight.chunk(3), b.attn.out_proj.weight, b.mlp.fc1.weight, b.mlp.fc2.weight):
                    nn.init.xavier_normal_(w)
    return model


@torch.no_grad()
def final_stream(model, x):
    for block in model.blocks:
        x = block(x)
    return x


@pytest.fixture(scope="module")
def x0():
    return torch.randn(4, 16, 32, generator=torch.Generator().manual_seed(1))


def test_pre_ln_variance_grows_with_depth_and_lns_tames_it(x0):
    pre = [final_stream(stack("pre", L), x0).var().item() for L in DEPTHS]
    lns = [final_stream(stack("lns", L), x0).var().item() for L in DEPTHS]
    assert pre[0] < pre[1] < pre[2] and pre[2] / pre[0] > 8  # ~linear growth over 16x the depth
    assert all(l < p for l, p in zip(lns, pre))
    assert lns[2] / lns[0] < 2.5  # ~log growth


def test_deepnorm_keeps_the_input_where_post_ln_washes_it_out(x0):
    cos = lambda a, b: nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
    post = [cos(x0, final_stream(stack("post", L), x0)) for L in DEPTHS]
    deep = [cos(x0, final_stream(stack("deepnorm", L, xavier=False), x0)) for L in DEPTHS]
    assert post[0] > post[2] and abs(post[1]) < 0.2 and abs(post[2]) < 0.2
    assert all(d > 0.9 for d in deep)
