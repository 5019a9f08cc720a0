"""Small real normlight models and batches for the analysis tests, and the edits that give known answers."""

from __future__ import annotations

import torch

from normlight.models.gpt import GPT
from normlight.models.vit import ViT

VOCAB, SEQ = 64, 16


def tiny_gpt(placement: str = "pre", depth: int = 4, seed: int = 0, **kw) -> GPT:
    """A 4-block GPT (dim 32) with non-trivial random weights, in eval mode."""
    torch.manual_seed(seed)
    model = GPT(vocab_size=VOCAB, max_seq_len=SEQ, depth=depth, dim=32, num_heads=4, placement=placement, **kw)
    with torch.no_grad():  # GPT-2 init writes tiny residual branches; make every block matter
        for blk in model.blocks:
            blk.attn.out_proj.weight.normal_(std=0.2)
            blk.mlp.fc2.weight.normal_(std=0.2)
    return model.eval()


def tiny_vit(seed: int = 0, **kw) -> ViT:
    """A 3-block ViT on 8x8 single-channel images, 5 classes."""
    torch.manual_seed(seed)
    args = dict(img_size=8, patch_size=4, in_chans=1, num_classes=5, depth=3, dim=16, num_heads=2)
    return ViT(**{**args, **kw}).eval()


def lm_batches(n: int = 2, batch: int = 3, seed: int = 1) -> list:
    """``n`` batches of random tokens with next-token targets."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        t = torch.randint(0, VOCAB, (batch, SEQ + 1), generator=g)
        out.append((t[:, :-1], t[:, 1:]))
    return out


def image_batches(n: int = 2, batch: int = 4, seed: int = 1) -> list:
    """``n`` batches of random 8x8 images with labels in 0..4."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 1, 8, 8, generator=g), torch.randint(0, 5, (batch,), generator=g)) for _ in range(n)]


@torch.no_grad()
def make_identity(block) -> None:
    """Zero the residual writers of a Pre-LN block: it becomes exactly the identity (x + 0 + 0)."""
    for lin in (block.attn.out_proj, block.mlp.fc2):
        lin.weight.zero_()
        lin.bias.zero_()


def streams(model, x) -> list[torch.Tensor]:
    """h_0..h_L taken with plain forward hooks on the model's own forward (independent of the analysis code)."""
    hs = []
    handles = [model.blocks[0].register_forward_pre_hook(lambda m, args: hs.append(args[0].detach().clone()))]
    handles += [b.register_forward_hook(lambda m, args, out: hs.append(out.detach().clone())) for b in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return hs
