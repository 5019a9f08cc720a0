"""Log the resolved LightningCLI config to the MLflow run: as ``config.yaml`` and as flat params.

LightningCLI's own SaveConfigCallback writes into ``trainer.log_dir``, which is None for sqlite/http MLflow
stores (it crashes with ``assert log_dir is not None``); this one uploads the file to the run instead.
Credentials in any URI of the config (e.g. the tracking URI) are replaced by ``***`` in both.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import SaveConfigCallback

from normlight.tracking.credentials import redact
from normlight.tracking.mlflow_utils import MLFlowLogger, mlflow_logger


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"init_args": {"lr": 1e-3}}}`` -> ``{"model.lr": 1e-3}`` (``init_args`` levels dropped)."""
    out: dict[str, Any] = {}
    items = cfg.items() if isinstance(cfg, dict) else []
    for key, value in items:
        name = prefix if key == "init_args" else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, name))
        elif isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                out.update(flatten_config(v, f"{name}.{i}") if isinstance(v, dict) else {f"{name}.{i}": v})
        else:
            out[name] = value
    return out


class MLflowConfigCallback(SaveConfigCallback):
    """Upload the resolved config (``config.yaml``; ``config.<stage>.<n>.yaml`` for the n-th later one, e.g. on
    resume) and log it as flat params on rank 0. Works with any MLflow store URI."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        """Called once per run by LightningCLI (rank 0 only)."""
        lg = mlflow_logger(trainer)
        if lg is None or not trainer.is_global_zero:
            return
        client, run_id = lg.experiment, lg.run_id
        earlier = [a.path for a in client.list_artifacts(run_id) if a.path.startswith("config")]
        name = f"config.{getattr(stage, 'value', stage)}.{len(earlier)}.yaml" if earlier else "config.yaml"
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / name
            self.parser.save(self.config, str(path), format="yaml", overwrite=True, multifile=False)
            path.write_text(redact(path.read_text()))
            client.log_artifact(run_id, str(path))
        cfg = self.config.as_dict() if hasattr(self.config, "as_dict") else dict(self.config)
        params = {
            k: redact(v) if isinstance(v, str) else v
            for k, v in flatten_config(cfg).items()
            if v is not None and not k.startswith(("config", "trainer.logger", "trainer.callbacks"))
        }
        if isinstance(lg, MLFlowLogger):
            lg.log_params_once(params)
            lg.config_logged = True
        else:
            existing = client.get_run(run_id).data.params
            lg.log_hyperparams({k: v for k, v in params.items() if k not in existing})
