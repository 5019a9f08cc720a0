"""A test-only Lightning callback that records what each rank saw, for the scale-out CLI tests.

Added to a real ``normlight fit`` run as ``--trainer.callbacks+=tests.workers.rank_probe.RankProbe`` (the repository root is on
PYTHONPATH). At the end of fit every rank writes ``rank<R>.json`` (losses, metrics, sharding facts,
throughput totals of the diagnostics callback) and ``rank<R>.pt`` (full parameters and running statistics).
"""

import json
import math
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


def _full(t: torch.Tensor) -> torch.Tensor:
    # DTensor shards (FSDP2) are gathered; a collective, so every rank calls it in the same order
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu().clone()


class RankProbe(Callback):
    """Record per-rank losses, metrics, sharding and statistics; write them when fit ends."""

    def __init__(self, out_dir: str):
        self.out = Path(out_dir)
        self.rec = {"local_loss": [], "first_batch_sum": None, "val": []}

    def on_train_start(self, trainer, pl_module):
        from torch.distributed.tensor import DTensor

        model = pl_module.model
        if hasattr(
            model, "reshard"
        ):  # FSDP2 keeps the root unsharded after a forward (the sanity check); shard it back
            model.reshard()
        params = list(model.parameters())
        self.rec["param_is_dtensor"] = [isinstance(p, DTensor) for p in params]
        self.rec["fsdp_units"] = sum(type(m).__name__.startswith("FSDP") for m in model.modules())
        self.rec["n_blocks"] = len(list(model.blocks))
        self.rec["local_numel"] = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
        self.rec["full_numel"] = sum(p.numel() for p in params)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.rec["local_loss"].append(float(loss))
        if self.rec["first_batch_sum"] is None:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            self.rec["first_batch_sum"] = float(x.double().sum())

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.rec["val"].append(
                {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
            )

    def on_fit_end(self, trainer, pl_module):
        diag = [cb for cb in trainer.callbacks if hasattr(cb, "meter")]
        meter = diag[0].meter if diag else None
        rank = trainer.global_rank
        self.rec.update(
            rank=rank,
            world_size=trainer.world_size,
            strategy=type(trainer.strategy).__name__,
            global_step=trainer.global_step,
            precision=str(trainer.precision),
            items_per_sec=(meter.total_items / meter.total_time) if meter and meter.total_time > 0 else math.nan,
            num_threads=torch.get_num_threads(),
        )
        model = pl_module.model
        state = {
            "params": {k: _full(p) for k, p in model.named_parameters()},
            "buffers": {k: _full(b) for k, b in model.named_buffers() if "running" in k},
        }
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.out / f"rank{rank}.pt")
        (self.out / f"rank{rank}.json").write_text(json.dumps(self.rec))
