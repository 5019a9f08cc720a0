"""Plugin scalars (GeM p per group, DWA weights, gates, drop rates) read from a real model and logged in training."""

import pytest
import torch

import normlight
from normlight.data.vision import DigitsDataModule
from normlight.diagnostics import StabilityDiagnostics
from normlight.diagnostics.plugin_state import plugin_scalars
from normlight.tasks.classification import ImageClassification
from tests.diagnostics.diag_tiny import trainer


def test_plugin_scalars_of_a_model_by_module_path():
    model = normlight.create_model(
        "vit-tiny", depth=2, dim=32, num_heads=2, pool="ggem", residual="gate", depth_regularizer="drop_path"
    )
    got = plugin_scalars(model)
    assert {k: v for k, v in got.items() if "pooling" in k} == {
        "diag/plugin/pooling/p_g0": 3.0,
        "diag/plugin/pooling/p_g1": 3.0,
    }
    assert got["diag/plugin/blocks.1.mlp_residual/gate"] == 0.0
    assert got["diag/plugin/depth_regularizer.1/drop_rate"] == pytest.approx(0.1)
    dense = normlight.create_model("gpt-nano", depth=2, residual="dwa")
    assert plugin_scalars(dense)["diag/plugin/blocks.1.depth_residual/w02"] == 1.0
    assert plugin_scalars(normlight.create_model("gpt-nano")) == {}  # default models expose nothing


def test_learned_plugin_scalars_are_logged_while_training(tmp_path):
    torch.manual_seed(0)
    kw = dict(depth=2, dim=32, num_heads=2, img_size=16, in_chans=1, pool="ggem", residual="gate")
    task = ImageClassification("vit-tiny", model_kwargs=kw, lr=1e-2, warmup_steps=0)
    diag = StabilityDiagnostics(every_n_steps=2)
    trainer(tmp_path, [diag], max_steps=4, limit_val_batches=1).fit(task, DigitsDataModule(batch_size=16))
    steps = dict(diag.logged)
    p0, p2 = steps[0]["diag/plugin/pooling/p_g1"], steps[2]["diag/plugin/pooling/p_g1"]
    assert p0 != 3.0 and p2 != p0  # read after each step's update: the exponent is being learned
    assert steps[2]["diag/plugin/blocks.0.attn_residual/gate"] != 0.0
