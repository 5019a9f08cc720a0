"""Pre-LN -> Pre-RMSNorm / Pre-CRMSNorm conversion is exact (max |logit diff| < 1e-4 in fp32) after training."""

import pytest
import torch

import normlight
from normlight.models.convert import to_pre_crmsnorm, to_pre_rmsnorm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def train_a_few_steps(model, make_batch, loss_fn, steps=5):
    """AdamW with weight decay so LN gamma/beta and the embeddings move away from their init (incl. non-zero mean)."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.1)
    for _ in range(steps):
        x, y = make_batch()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model.eval()


def gpt_batch():
    idx = torch.randint(0, 64, (4, 16))
    return idx, idx.roll(-1, dims=1)


@pytest.mark.parametrize("pos,mlp", [("learned", "gelu"), ("rope", "swiglu")])
def test_gpt_converts_exactly(pos, mlp):
    torch.manual_seed(0)
    model = normlight.create_model("gpt-nano", norm="layernorm", vocab_size=64, max_seq_len=16, pos=pos, mlp=mlp)
    ce = lambda logits, y: torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    train_a_few_steps(model, gpt_batch, ce)
    gamma = model.blocks[0].norm1.weight
    assert not torch.allclose(gamma, torch.ones_like(gamma))  # the affine really has something to fold
    idx = torch.randint(0, 64, (3, 16))
    ref = model(idx)
    rms, crms = to_pre_rmsnorm(model), to_pre_crmsnorm(model)
    assert (rms(idx) - ref).abs().max().item() < 1e-4
    assert (crms(idx) - ref).abs().max().item() < 1e-4
    assert crms.tok_emb.weight.shape == (64, 63) and crms.blocks[0].attn.qkv.in_features == 63
    assert (
        rms.spec["norm"] == "rmsnorm" and crms.spec["norm"] == "crmsnorm" and crms.spec["converted_from"] == "layernorm"
    )
    # the stream really is zero-mean (what makes LN == RMSNorm): embeddings re-centred
    assert rms.tok_emb.weight.mean(-1).abs().max() < 1e-6
    assert torch.equal(model(idx), ref)  # the original is untouched


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_converts_exactly(pool):
    torch.manual_seed(0)
    model = normlight.create_model(
        "vit-tiny", norm="layernorm", depth=2, dim=32, num_heads=2, img_size=8, patch_size=4, num_classes=5, pool=pool
    )
    batch = lambda: (torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,)))
    train_a_few_steps(model, batch, torch.nn.functional.cross_entropy)
    img = torch.randn(3, 3, 8, 8)
    ref = model(img)
    assert (to_pre_rmsnorm(model)(img) - ref).abs().max().item() < 1e-4
    assert (to_pre_crmsnorm(model)(img) - ref).abs().max().item() < 1e-4


def test_unsupported_models_are_refused_clearly():
    with pytest.raises(ValueError, match="needs placement 'pre', got PeriNormBlock"):
        to_pre_rmsnorm(normlight.create_model("gpt-nano", norm="layernorm", placement="peri"))
    with pytest.raises(ValueError, match="final norm is RMSNorm; needs an affine LayerNorm"):
        to_pre_rmsnorm(normlight.create_model("gpt-nano", norm="rmsnorm"))
    with pytest.raises(ValueError, match="lape=True"):
        to_pre_rmsnorm(normlight.create_model("vit-tiny", norm="layernorm", depth=1, lape=True))
