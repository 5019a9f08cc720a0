"""Pieces the CLI tests plug into real `normlight fit` runs (by class path) and the shared argument lists."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback

# a GPT-nano fit on the bundled pydoc text that takes seconds; constant LR so runs of different lengths agree
NANO = [
    "--model",
    "CausalLanguageModeling",
    "--model.model",
    "gpt-nano",
    "--model.norm",
    "rmsnorm",
    "--model.lr",
    "3e-3",
    "--model.warmup_steps",
    "0",
    "--model.min_lr_ratio",
    "1.0",
    "--model.sample_tokens",
    "4",
    "--data",
    "PydocTextDataModule",
    "--data.block_size",
    "32",
    "--data.batch_size",
    "4",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.log_every_n_steps",
    "1",
    "--trainer.num_sanity_val_steps",
    "0",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.accelerator",
    "cpu",
    "--trainer.devices",
    "1",
    "--diagnostics.every_n_steps",
    "2",
]


class SignalAtStep(Callback):
    """Send a real signal to this process once ``step`` training steps are done (like a user's Ctrl-C or a
    scheduler's SIGTERM arriving mid-run)."""

    def __init__(self, signum: int = 15, step: int = 3):
        self.signum, self.step = signum, step
        self.sent = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.sent and trainer.global_step >= self.step:
            self.sent = True
            os.kill(os.getpid(), signal.Signals(self.signum))


class BreakFolderAtStep(Callback):
    """Replace ``folder`` by a plain file once ``step`` steps are done (a checkpoint disk that goes away)."""

    def __init__(self, folder: str, step: int = 2):
        self.folder, self.step = folder, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import shutil
        from pathlib import Path

        if trainer.global_step == self.step:
            shutil.rmtree(self.folder, ignore_errors=True)
            Path(self.folder).write_text("the checkpoint folder is gone")


def callback_arg(cls, **init_args) -> list[str]:
    """``--trainer.callbacks`` arguments that add one callback given by class."""
    import json

    spec = {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}
    return ["--trainer.callbacks", json.dumps([spec])]
