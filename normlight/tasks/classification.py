"""Image classification: cross-entropy (optional label smoothing), top-1 / top-5 accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from normlight.tasks.base import NormTask


class ImageClassification(NormTask):
    """Train a ViT / ResNet / timm classifier. Logs ``train/loss``, ``lr``, ``val/loss``, ``val/acc1``, ``val/acc5``.

    Args:
        model: vision preset (``vit-tiny``, ``resnet20``, ``timm:resnet18``, ...).
        label_smoothing: cross-entropy label smoothing for training (validation loss is plain cross-entropy).
        **kwargs: everything :class:`normlight.tasks.base.NormTask` takes (norm, placement, lr, ...).
    """

    def __init__(self, model: str = "vit-tiny", label_smoothing: float = 0.0, **kwargs):
        super().__init__(model, **kwargs)
        n = int(self.model.num_classes)
        self.label_smoothing = label_smoothing
        for split in ("val", "test"):
            setattr(self, f"{split}_acc1", MulticlassAccuracy(n, top_k=1, average="micro"))
            setattr(self, f"{split}_acc5", MulticlassAccuracy(n, top_k=min(5, n), average="micro"))

    def check_data(self, datamodule) -> None:
        """Classes, channels and image size of the data must match the model."""
        m = self.model
        if getattr(datamodule, "num_classes", None) is not None and datamodule.num_classes != m.num_classes:
            raise self._mismatch(
                "the number of classes",
                datamodule.num_classes,
                m.num_classes,
                f"Set --model.model_kwargs '{{num_classes: {datamodule.num_classes}}}'.",
            )
        if getattr(datamodule, "in_chans", None) is not None and datamodule.in_chans != getattr(
            m, "in_chans", datamodule.in_chans
        ):
            raise self._mismatch(
                "input channels",
                datamodule.in_chans,
                m.in_chans,
                f"Set --data.in_chans {m.in_chans} or --model.model_kwargs '{{in_chans: {datamodule.in_chans}}}'.",
            )
        size = getattr(m, "img_size", None)
        if size is not None and getattr(datamodule, "img_size", None) is not None and datamodule.img_size != size:
            raise self._mismatch(
                "the image size",
                datamodule.img_size,
                size,
                f"Set --data.img_size {size} or --model.model_kwargs '{{img_size: {datamodule.img_size}}}' "
                "(a ViT needs img_size divisible by its patch size).",
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.model(images)

    def training_step(self, batch, batch_idx):
        """Cross-entropy with label smoothing on one batch."""
        x, y = batch
        loss = F.cross_entropy(self.model(x), y, label_smoothing=self.label_smoothing)
        loss = self.with_early_exits(loss, lambda lg: F.cross_entropy(lg, y, label_smoothing=self.label_smoothing))
        self.log_train_loss(loss)
        return loss

    def _eval_step(self, batch, split: str) -> None:
        x, y = batch
        logits = self.model(x)
        self.log(f"{split}/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=split == "val", sync_dist=True)
        for k in ("acc1", "acc5"):
            metric = getattr(self, f"{split}_{k}")
            metric.update(logits, y)
            self.log(f"{split}/{k}", metric, on_epoch=True, prog_bar=k == "acc1" and split == "val")

    def validation_step(self, batch, batch_idx):
        """Validation loss and accuracies (aggregated over the epoch and across ranks)."""
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx):
        """Test loss and accuracies."""
        self._eval_step(batch, "test")

    def predict_step(self, batch, batch_idx):
        """Predicted class per image."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.model(x).argmax(-1)
