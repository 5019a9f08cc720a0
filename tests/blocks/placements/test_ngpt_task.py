"""nGPT through the real training task: a Lightning optimizer step leaves every matrix on the unit sphere.

The re-normalization is the placement's ``after_optimizer_step`` hook; only the task calls it during a fit,
so this checks the wiring (the hook itself is checked in test_init.py).
"""

import pytest
import torch
from lightning.pytorch import Trainer

from normlight.blocks.placements.ngpt import _matrices
from normlight.data import PydocTextDataModule
from normlight.tasks import CausalLanguageModeling

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_fit_step_through_the_task_keeps_ngpt_matrices_unit_norm(tmp_path):
    torch.manual_seed(0)
    task = CausalLanguageModeling(
        model="gpt-nano",
        placement="ngpt",
        model_kwargs={"depth": 1, "pos": "rope"},
        sample_tokens=0,
        lr=3e-2,
        warmup_steps=0,
    )
    before = [w.detach().clone() for w in _matrices(task.model)]
    trainer = Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(task, PydocTextDataModule(block_size=16, batch_size=2))
    model = task.model
    named = {
        "tok_emb": (model.tok_emb.weight, 1),
        "head": (model.head.weight, 1),
        "qkv": (model.blocks[0].attn.qkv.weight, 1),
        "fc1": (model.blocks[0].mlp.fc1.weight, 1),
        "out_proj": (model.blocks[0].attn.out_proj.weight, 0),
        "fc2": (model.blocks[0].mlp.fc2.weight, 0),
    }
    assert any(not torch.equal(b, w) for b, w in zip(before, _matrices(model)))  # the optimizer did step
    for name, (w, dim) in named.items():
        norms = w.detach().norm(dim=dim)
        torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")
