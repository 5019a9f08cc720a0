"""Reduced copies of the shipped sweeps that run in seconds (imported by the sweep tests)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))

# overrides that make any base config run in a few seconds
TINY = {
    "trainer.max_steps": 3,
    "trainer.val_check_interval": 3,
    "trainer.limit_val_batches": 1,
    "trainer.log_every_n_steps": 1,
    "trainer.enable_checkpointing": False,
    "diagnostics.every_n_steps": 2,
}


def reduced_sweep(src: Path, dst_dir: Path, grid: dict, fixed: dict | None = None, name: str | None = None) -> Path:
    """A copy of a shipped sweep with a smaller grid, tiny fixed overrides and an absolute base path."""
    raw = yaml.safe_load(src.read_text())
    raw["base"] = str((src.parent / raw["base"]).resolve())
    raw["grid"] = grid
    raw["fixed"] = {**raw.get("fixed", {}), **TINY, **(fixed or {})}
    if name:
        raw["name"] = name
    dst = dst_dir / f"{raw.get('name', src.stem)}.yaml"
    dst.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dst
