"""Which recorded fields of a run are its configuration, and which of them are seeds (shared by compare and the
MLflow view, so neither imports the other)."""

from __future__ import annotations

# config keys that change how a run is shown or stored, never its result
NOT_RESULT = (
    "trainer.logger",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.default_root_dir",
    "ckpt_path",
    "config",
)


SEED_FIELDS = ("seed_everything", "seed")


def is_seed_key(key: str) -> bool:
    """``seed_everything``, ``seed`` and any ``*_seed`` / ``*.seed`` key (e.g. ``data.split_seed``)."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf in SEED_FIELDS or leaf.endswith("_seed")


def run_config(run) -> dict[str, str]:
    """The run's flat config (its params, or ``cfg.`` tags for a run without params), minus keys that never
    change a result (logger, progress bar, output folder...)."""
    src = run.data.params or {k[4:]: v for k, v in run.data.tags.items() if k.startswith("cfg.")}
    return {k: v for k, v in src.items() if not any(k == p or k.startswith(p + ".") for p in NOT_RESULT)}


__all__ = ["NOT_RESULT", "SEED_FIELDS", "is_seed_key", "run_config"]
