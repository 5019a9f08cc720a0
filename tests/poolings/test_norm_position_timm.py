"""Where the final norm sits around pooling, checked against timm's VisionTransformer for cls and avg.

timm normalizes every token before the class-token readout (``norm``) but the pooled vector after average
pooling (``fc_norm``). Our ``cls`` and ``mean`` poolings declare the same, so the readout of the same tokens
with the same norm weights gives timm's logits.
"""

import pytest
import timm
import torch

import normlight
from normlight.models.transformer import readout


@pytest.mark.parametrize("pool, global_pool, class_token", [("cls", "token", True), ("mean", "avg", False)])
def test_readout_matches_timm(pool, global_pool, class_token):
    torch.manual_seed(0)
    m = timm.models.vision_transformer.VisionTransformer(
        img_size=16,
        patch_size=8,
        embed_dim=16,
        depth=1,
        num_heads=2,
        num_classes=3,
        global_pool=global_pool,
        class_token=class_token,
    ).eval()
    timm_norm = m.norm if class_token else m.fc_norm
    with torch.no_grad():
        for p in timm_norm.parameters():
            p.uniform_(-1, 1)
    tokens = []
    m.blocks.register_forward_hook(lambda mod, args, out: tokens.append(out))
    img = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = m(img)
    norm = torch.nn.LayerNorm(16, eps=1e-6)
    norm.load_state_dict(timm_norm.state_dict())
    pooling = normlight.create_pooling(pool, 16)
    with torch.no_grad():
        got = m.head(readout(norm, pooling, tokens[0]))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    if pool == "mean":  # normalizing before averaging is another readout (for cls a per-token norm commutes)
        other = normlight.create_pooling(pool, 16, norm_position="pre")
        with torch.no_grad():
            assert not torch.allclose(m.head(readout(norm, other, tokens[0])), want, atol=1e-3)
