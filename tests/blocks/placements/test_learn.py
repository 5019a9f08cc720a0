"""Every registered placement trains: a tiny GPT and ViT fit one fixed batch with AdamW (hooks included)."""

import pytest
import torch

import normlight


def fit(model, x, y, steps=40, lr=1e-2):
    hook = getattr(model.placement_cls, "after_optimizer_step", None)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        if hook is not None:
            hook(model)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("placement", normlight.list_placements())
def test_placement_fits_a_batch(placement):
    torch.manual_seed(0)
    gpt = normlight.create_model(
        "gpt-nano",
        norm="layernorm",
        placement=placement,
        vocab_size=32,
        max_seq_len=16,
        dim=32,
        num_heads=2,
        pos="rope",
    )
    idx = torch.randint(0, 32, (4, 16))
    losses = fit(gpt, idx, idx.roll(-1, 1))
    assert losses[-1] < 0.7 * losses[0], f"gpt {placement}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"

    vit = normlight.create_model(
        "vit-tiny", norm="layernorm", placement=placement, depth=2, dim=32, num_heads=2, img_size=8, num_classes=4
    )
    img, labels = torch.randn(8, 3, 8, 8), torch.arange(8) % 4
    losses = fit(vit, img, labels)
    assert losses[-1] < 0.5 * losses[0], f"vit {placement}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"
