"""StabilityDiagnostics inside a real Lightning Trainer on small hand-written modules."""

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from normlight.diagnostics import StabilityDiagnostics
from tests.diagnostics.diag_tiny import LMTask, token_loader, trainer


class KnownGradTask(pl.LightningModule):
    """loss = sum_i <c_i, w_i>: the gradient of every parameter is the constant c_i."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.blocks = nn.ModuleList([nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)])
        g = torch.Generator().manual_seed(0)
        self.consts = [torch.randn(4, 4, generator=g) * (i + 1) for i in range(2)]

    def training_step(self, batch, batch_idx):
        return sum((c * p).sum() for c, p in zip(self.consts, self.model.blocks.parameters()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def test_grad_norm_is_taken_before_clipping(tmp_path):
    task = KnownGradTask()
    before = [p.detach().clone() for p in task.parameters()]
    diag = StabilityDiagnostics(every_n_steps=1)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), batch_size=1)
    trainer(tmp_path, [diag], max_steps=1, gradient_clip_val=0.01, limit_val_batches=0).fit(task, data)
    norms = [c.norm().item() for c in task.consts]
    step0 = dict(diag.logged)[0]
    assert step0["diag/grad_norm"] == pytest.approx(math.hypot(*norms), rel=1e-5)
    assert [step0["diag/grad_norm/l00"], step0["diag/grad_norm/l01"]] == pytest.approx(norms, rel=1e-5)
    # ... while the update itself used the clipped gradient (lr=1, so |update| == clip value)
    update = math.sqrt(sum(((p - b) ** 2).sum().item() for p, b in zip(task.parameters(), before)))
    assert update == pytest.approx(0.01, rel=1e-4)


def test_nan_loss_stops_run_cleanly_and_skips_the_bad_update(tmp_path):
    diag = StabilityDiagnostics(every_n_steps=3)
    task = LMTask(nan_at_step=4)
    t = trainer(tmp_path, [diag], max_steps=20)
    t.fit(task, token_loader(), token_loader(seed=1))  # no exception
    assert diag.guard.diverged and diag.guard.step == 4
    assert t.global_step < 20 and t.should_stop
    assert all(torch.isfinite(p).all() for p in task.parameters())
    final = diag.logged[-1][1]
    assert final["summary/diverged"] == 1.0 and final["summary/diverged_step"] == 4


def test_healthy_run_diagnostics_on_schedule(tmp_path):
    diag = StabilityDiagnostics(every_n_steps=4)
    task = LMTask(depth=3)
    t = trainer(tmp_path, [diag], max_steps=9)
    t.fit(task, token_loader(), token_loader(seed=1))
    by_step = {}
    for step, m in diag.logged:
        by_step.setdefault(step, {}).update(m)
    assert {0, 4, 8} <= set(by_step)
    for s in (0, 4, 8):
        m = by_step[s]
        assert {f"diag/resid_rms/l0{i}" for i in range(3)} <= set(m)
        assert 0 < m["diag/attn_entropy_mean"] <= 1 and m["diag/attn_max_logit"] > 0
        assert m["diag/tokens_per_sec"] > 0 and m["diag/peak_mem_mb"] > 0
    assert not any("attn_entropy" in k for s, m in diag.logged if s % 4 for k in m)
    # diagnostics mode is off again and nothing large is kept
    for b in task.model.blocks:
        assert b.attn.record_attention is False and b.attn.last_attn_probs is None
        assert not b._forward_hooks and not b.attn._forward_hooks
    bi = [m for s, m in diag.logged if "diag/block_influence_mean" in m]
    assert len(bi) == 1 and 0 < bi[0]["diag/block_influence_mean"] < 2  # validation at step 5 only
    final = diag.logged[-1][1]
    assert final["summary/diverged"] == 0.0 and math.isfinite(final["summary/best_val_loss"])


def test_metrics_reach_the_trainer_loggers(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    diag = StabilityDiagnostics(every_n_steps=2, attention=False, block_influence=False)
    logger = CSVLogger(tmp_path)
    t = pl.Trainer(
        max_steps=4,
        logger=logger,
        callbacks=[diag],
        accelerator="cpu",
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    t.fit(LMTask(), token_loader())
    text = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    header = text.splitlines()[0].split(",")
    assert "diag/grad_norm" in header and "summary/diverged" in header and "diag/attn_entropy_mean" not in header


def test_bad_period_is_a_clear_error():
    with pytest.raises(ValueError, match="every_n_steps"):
        StabilityDiagnostics(every_n_steps=0)


def test_diagnostics_do_not_change_training(tmp_path):
    """Every diagnostic on every step, and the trained weights are bit-identical to a run without them."""

    def train(callbacks):
        pl.seed_everything(0)
        task = LMTask()
        trainer(tmp_path, callbacks, max_steps=4, limit_val_batches=1, val_check_interval=2).fit(
            task, token_loader(), token_loader(seed=1)
        )
        return [p.detach().clone() for p in task.parameters()]

    plain = train([])
    diag = StabilityDiagnostics(every_n_steps=1)
    with_diag = train([diag])
    assert sum("diag/attn_entropy_mean" in m for _, m in diag.logged) == 4
    assert all(torch.equal(a, b) for a, b in zip(plain, with_diag))


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_bf16_runs_give_finite_diagnostics(tmp_path, precision):
    diag = StabilityDiagnostics(every_n_steps=1)
    trainer(tmp_path, [diag], max_steps=3, precision=precision, limit_val_batches=1, val_check_interval=2).fit(
        LMTask(), token_loader(), token_loader(seed=1)
    )
    merged = {}
    for _, m in diag.logged:
        merged.update(m)
    for key in ("diag/grad_norm", "diag/resid_rms/l00", "diag/attn_entropy_mean", "diag/block_influence_mean"):
        assert math.isfinite(merged[key]) and merged[key] > 0, key
    assert merged["summary/diverged"] == 0.0
