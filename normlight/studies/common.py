"""Shared pieces of the built-in GPT studies: the scale settings and the byte-unigram floor of the text."""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache

GPT_BASE = "configs/gpt_pydoc.yaml"  # relative to this package: the runner resolves it next to the study module

# trainer settings per scale: smoke = wiring only (a few steps), cpu = minutes, gpu = paper-sized
SMOKE_FIXED = {
    "trainer.max_steps": 2,
    "trainer.val_check_interval": 2,
    "trainer.limit_val_batches": 1,
    "diagnostics.every_n_steps": 1,
}


def grid_for(scale: str, grid: dict) -> dict:
    """The study's grid, or at smoke scale only its first point (smoke runs check the wiring, in seconds)."""
    return {k: v[:1] for k, v in grid.items()} if scale == "smoke" else grid


def seeds_axis(seeds: int) -> list[int]:
    """The ``seed_everything`` grid axis: the first ``seeds`` seeds."""
    return list(range(seeds))


def gpt_fixed(scale: str, s: dict, *, warmup_steps: int, validations: int = 2, **more) -> dict:
    """The ``fixed`` section of a GPT study's sweep from its scale settings ``s`` (depth, optional dim/heads,
    steps): model size, steps, warm-up, ``more`` config keys, and ``validations`` evenly spaced validations
    (smoke scale: SMOKE_FIXED instead)."""
    size = {"depth": s["depth"]} | ({"dim": s["dim"], "num_heads": s["heads"]} if "dim" in s else {})
    fixed = {"model.model_kwargs": size, "trainer.max_steps": s["steps"], "model.warmup_steps": warmup_steps, **more}
    return fixed | (SMOKE_FIXED if scale == "smoke" else {"trainer.val_check_interval": s["steps"] // validations})


@lru_cache(maxsize=1)
def pydoc_unigram_nats() -> float:
    """Entropy (nats per byte) of the byte-unigram distribution of the pydoc corpus: the loss of a model that
    learned byte frequencies only. A run whose final val loss is not below it has not learned from context."""
    from normlight.data.text import PydocTextDataModule

    data = PydocTextDataModule().text().encode("utf-8")
    counts = Counter(data)
    n = len(data)
    return -sum(c / n * math.log(c / n) for c in counts.values())
