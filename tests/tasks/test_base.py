"""NormTask: placement hooks and recommended defaults, AGC wiring."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from normlight.blocks.placements.standard import PreNormBlock
from normlight.data import (
    PydocTextDataModule,
)
from normlight.tasks import CausalLanguageModeling, ImageClassification

# ---------------------------------------------------------------- data


class CountingBlock(PreNormBlock):
    """A pre-norm block that recommends hyperparameters and counts optimizer steps (test placement)."""

    recommended_defaults = {"weight_decay": 0.0, "warmup_steps": 0}
    calls = 0

    @staticmethod
    def after_optimizer_step(model):
        CountingBlock.calls += 1


def test_placement_hooks_and_recommended_defaults(tmp_path):
    task = CausalLanguageModeling(
        model="gpt-nano", placement=CountingBlock, model_kwargs={"depth": 1}, sample_tokens=0, lr=1e-3
    )
    assert task.applied_defaults == {"weight_decay": 0.0, "warmup_steps": 0}
    assert task.weight_decay == 0.0 and task.warmup_steps == 0
    explicit = CausalLanguageModeling(
        model="gpt-nano", placement=CountingBlock, model_kwargs={"depth": 1}, weight_decay=0.2
    )
    assert explicit.weight_decay == 0.2 and explicit.applied_defaults == {"warmup_steps": 0}
    CountingBlock.calls = 0
    dm = PydocTextDataModule(block_size=16, batch_size=2)
    trainer = Trainer(
        max_steps=3,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(task, dm)
    assert CountingBlock.calls == 3  # once per optimizer step, not per micro-batch


def test_agc_option_clips_unit_wise_before_the_step():
    task = ImageClassification(model="resnet20", model_kwargs={"img_size": 16, "in_chans": 1}, agc_clipping=0.01)
    torch.manual_seed(0)
    for p in task.model.parameters():
        p.grad = torch.randn_like(p) * 10.0  # far above 1% of any weight norm
    task.on_before_optimizer_step(None)
    for name, p in task.model.named_parameters():
        w, g = p.detach().double(), p.grad.double()
        if p.ndim > 1:
            w_n, g_n = w.flatten(1).norm(dim=1), g.flatten(1).norm(dim=1)
        else:
            w_n, g_n = w.norm()[None], g.norm()[None]
        limit = 0.01 * torch.clamp(w_n, min=1e-3)
        assert torch.all(g_n <= limit * (1 + 1e-4)), name
    off = ImageClassification(model="resnet20", model_kwargs={"img_size": 16, "in_chans": 1})
    for p in off.model.parameters():
        p.grad = torch.ones_like(p) * 10.0
    off.on_before_optimizer_step(None)
    assert all(torch.all(p.grad == 10.0) for p in off.model.parameters())


def test_the_schedule_reaches_the_norms_before_training_and_keeps_weights_and_rng():
    task = CausalLanguageModeling(model="gpt-nano", norm="prepbn", sample_tokens=0)
    assert task.norm_context is None and int(task.model.blocks[0].norm1.total_step) == 60000  # no Trainer yet
    before = {k: v.clone() for k, v in task.model.named_parameters()}
    rng = torch.get_rng_state()
    task.use_norm_context({"total_steps": 10, "warmup_steps": 1})
    assert torch.equal(torch.get_rng_state(), rng)  # data order and dropout of the run do not change
    assert all(torch.equal(p, before[k]) for k, p in task.model.named_parameters())
    assert {int(m.total_step) for m in task.model.modules() if hasattr(m, "total_step")} == {10}
    plain = CausalLanguageModeling(model="gpt-nano", norm="layernorm", sample_tokens=0)
    model = plain.model
    plain.use_norm_context({"total_steps": 10, "warmup_steps": 1})
    assert plain.model is model  # no norm asks for the schedule: nothing rebuilt


def test_fit_gives_powernorm_the_lr_warmup_and_heads_logs_and_checkpoints_them(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from mlflow import MlflowClient

    from normlight.tracking.mlflow_utils import MLFlowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    task = CausalLanguageModeling(
        model="gpt-nano", norm="powernorm", model_kwargs={"depth": 1}, sample_tokens=0, warmup_steps=2
    )
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt")
    trainer = Trainer(
        max_steps=3,
        accumulate_grad_batches=2,
        limit_val_batches=0,
        logger=MLFlowLogger(experiment_name="schedule", tracking_uri=uri),
        callbacks=[ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(task, PydocTextDataModule(block_size=16, batch_size=4))
    # in training forward calls: 3 steps x 2 micro-batches, LR warmup 2 steps x 2
    assert task.norm_context == {"total_steps": 6, "warmup_steps": 4}
    pns = [m for m in task.model.modules() if type(m).__name__ == "PowerNorm"]
    assert len(pns) == 3 and {(m.warmup_iters, m.group_num) for m in pns} == {(4, 4)}  # 4 heads (fairseq recipe)
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("schedule").experiment_id])[0]
    params = run.data.params
    assert params["schedule/total_steps"] == "3" and params["schedule/warmup_steps"] == "2"
    assert params["norm_context/total_steps"] == "6" and params["norm_context/warmup_steps"] == "4"
    assert params["norm/warmup_iters"] == "4" and params["norm/group_num"] == "4"
    reloaded = CausalLanguageModeling.load_from_checkpoint(ckpt.best_model_path or ckpt.last_model_path)
    assert reloaded.norm_context == {"total_steps": 6, "warmup_steps": 4}
    assert {m.warmup_iters for m in reloaded.model.modules() if type(m).__name__ == "PowerNorm"} == {4}
    assert all(
        torch.equal(a, b) for a, b in zip(reloaded.model.state_dict().values(), task.model.state_dict().values())
    )


def test_fast_norms_and_compile_norms_options_reach_the_norms():
    ref = CausalLanguageModeling(model="gpt-nano", norm="rmsnorm", model_kwargs={"depth": 1}, fast_norms=False)
    norms = [m for m in ref.model.modules() if type(m).__name__ == "RMSNorm"]
    assert norms and all(m.fast is False for m in norms)
    comp = CausalLanguageModeling(model="gpt-nano", norm="rmsnorm", model_kwargs={"depth": 1}, compile_norms=True)
    assert all(m.fast and m.compile_kernels for m in comp.model.modules() if type(m).__name__ == "RMSNorm")


@pytest.mark.slow
def test_compile_norms_logs_the_compile_time_as_an_mlflow_param(tmp_path):
    from mlflow.tracking import MlflowClient

    from normlight.tracking.mlflow_utils import MLFlowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    task = CausalLanguageModeling(
        model="gpt-nano", norm="rmsnorm", model_kwargs={"depth": 1}, sample_tokens=0, compile_norms=True
    )
    logger = MLFlowLogger(experiment_name="compile", tracking_uri=uri, artifact_location=(tmp_path / "a").as_uri())
    trainer = Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(task, PydocTextDataModule(block_size=16, batch_size=2))
    params = MlflowClient(uri).get_run(logger.run_id).data.params
    assert float(params["compile_norms_seconds"]) > 0 and int(params["compile_norms_graphs"]) >= 2


def test_plugin_slots_are_tagged_with_provenance_and_named_when_not_default():
    kw = dict(depth=2, dim=32, num_heads=2, pool="ggem", residual="gate", depth_regularizer="drop_path")
    tags = ImageClassification("vit-tiny", model_kwargs=kw).run_tags()
    for key, value in (
        ("pool", "ggem"),
        ("residual", "gate"),
        ("mixer", "attention"),
        ("depth_regularizer", "drop_path"),
    ):
        assert (tags[key], tags[f"{key}_dist"]) == (value, "normlight") and tags[f"{key}_version"]
    name = ImageClassification("vit-tiny", model_kwargs=kw).run_name()
    assert "/pool-ggem/residual-gate/depth_regularizer-drop_path/" in name and "mixer-" not in name
    lm = CausalLanguageModeling("gpt-nano")
    assert lm.run_tags()["readout"] == "last_token" and lm.run_tags()["depth_regularizer"] == "None"
    assert lm.run_name().startswith("gpt-nano/pre/layernorm/lr")  # defaults keep today's names


def test_early_exit_loss_is_the_weighted_sum_of_every_exits_cross_entropy():
    import torch.nn.functional as F

    from normlight.depth.layerskip import exit_weights

    torch.manual_seed(0)
    kw = dict(depth=3, depth_regularizer="layerskip", depth_regularizer_kwargs={"p_max": 0.0, "early_exit_scale": 1.0})
    task = CausalLanguageModeling("gpt-nano", model_kwargs=kw).train()
    x, y = torch.randint(0, 256, (2, 8)), torch.randint(0, 256, (2, 8))
    loss = task.with_early_exits(
        *task._loss((x, y))[:1], lambda lg: F.cross_entropy(lg.reshape(-1, 256), y.reshape(-1))
    )
    w = exit_weights(3, 1.0)
    h = task.model.drop(task.model.tok_emb(x) + task.model.pos_emb(torch.arange(8)))
    ce = []
    for blk in task.model.blocks:
        h = blk(h)
        ce.append(F.cross_entropy(task.model.logits(h).reshape(-1, 256), y.reshape(-1)))
    torch.testing.assert_close(loss, sum(wi * c for wi, c in zip(w, ce)))
    assert task.model.early_exits is None  # consumed
