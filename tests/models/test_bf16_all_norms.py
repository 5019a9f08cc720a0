"""bf16-mixed training of every registered norm stays finite, in all three model families.

One real Lightning Trainer (precision="bf16-mixed", CPU) per norm trains a tiny GPT, ViT and ResNet
together for 2 steps. In-process and single-device: the norm math under autocast is what is tested.
"""

import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

import normlight

V, T, IMG, B = 64, 8, 8, 4


class TinyFamilies(pl.LightningModule):
    """A tiny GPT, ViT and ResNet sharing one optimizer; the loss is their sum, each part recorded.

    Widths are multiples of 32 so that every norm runs with its paper defaults (e.g. 32 groups).
    """

    def __init__(self, norm: str):
        super().__init__()
        torch.manual_seed(0)
        self.gpt = normlight.create_model(
            "gpt-nano", norm=norm, vocab_size=V, max_seq_len=T, depth=2, dim=64, num_heads=2
        )
        self.vit = normlight.create_model(
            "vit-tiny", norm=norm, img_size=IMG, patch_size=4, depth=2, dim=64, num_heads=2
        )
        self.resnet = normlight.create_model("resnet20", norm=norm, img_size=IMG, width=2.0)
        self.record: list[dict] = []

    def training_step(self, batch, batch_idx):
        idx, images, labels = batch
        gpt_logits = self.gpt(idx[:, :-1])
        losses = {
            "gpt": F.cross_entropy(gpt_logits.float().reshape(-1, V), idx[:, 1:].reshape(-1)),
            "vit": F.cross_entropy(self.vit(images).float(), labels),
            "resnet": F.cross_entropy(self.resnet(images).float(), labels),
        }
        self.record.append({"dtype": gpt_logits.dtype, **{k: v.item() for k, v in losses.items()}})
        return sum(losses.values())

    def on_before_optimizer_step(self, optimizer):
        self.record[-1]["grads_finite"] = all(
            torch.isfinite(p.grad).all().item() for p in self.parameters() if p.grad is not None
        )

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def loader():
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, V, (2 * B, T + 1), generator=g)
    images = torch.randn(2 * B, 3, IMG, IMG, generator=g)
    labels = torch.randint(0, 10, (2 * B,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(idx, images, labels), batch_size=B)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


@pytest.mark.parametrize("norm", normlight.list_norms())
def test_bf16_mixed_training_is_finite(norm, tmp_path):
    module = TinyFamilies(norm)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, loader())
    assert len(module.record) == 2
    for step in module.record:
        assert step["dtype"] == torch.bfloat16, "autocast did not run the model in bf16"
        for family in ("gpt", "vit", "resnet"):
            assert math.isfinite(step[family]), (norm, family, step)
        assert step["grads_finite"], (norm, step)
