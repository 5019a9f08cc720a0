"""Optimizer parameter groups, the warmup + cosine schedule, optimizer choices and errors."""

from __future__ import annotations

import pytest
import torch

from normlight.tasks import ImageClassification
from normlight.tasks.optim import OptimizerConfigError, build_optimizer, param_groups, warmup_cosine

# ---------------------------------------------------------------- data


def test_weight_decay_excludes_norms_biases_and_1d():
    task = ImageClassification(model="vit-tiny", model_kwargs={"depth": 1, "dim": 32, "num_heads": 2})
    decay, no_decay = param_groups(task.model, 0.05)
    names = {id(p): n for n, p in task.model.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all("norm" not in names[id(p)] for p in decay["params"])
    assert any(names[id(p)].endswith("bias") for p in no_decay["params"])
    assert any("norm" in names[id(p)] for p in no_decay["params"])
    (everything,) = param_groups(task.model, 0.05, decay_norm_and_bias=True)
    assert len(everything["params"]) == len(list(task.model.parameters()))


def test_warmup_cosine_matches_formula():
    warm, total, floor = 10, 110, 0.1
    assert warmup_cosine(0, warm, total, floor) == pytest.approx(1 / 11)
    assert warmup_cosine(9, warm, total, floor) == pytest.approx(10 / 11)
    assert warmup_cosine(10, warm, total, floor) == pytest.approx(1.0)
    assert warmup_cosine(60, warm, total, floor) == pytest.approx(floor + (1 - floor) * 0.5)  # half-way: cos(pi/2)=0
    assert warmup_cosine(110, warm, total, floor) == pytest.approx(floor)


def test_optimizer_choices_and_errors():
    p = [torch.nn.Parameter(torch.zeros(2, 2))]
    sgd = build_optimizer("SGD", [{"params": p}], 0.1, momentum=0.9, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert isinstance(build_optimizer("adamw", [{"params": p}], 1e-3), torch.optim.AdamW)
    with pytest.raises(OptimizerConfigError, match="'adam'"):
        build_optimizer("adam", [{"params": p}], 1e-3)
    with pytest.raises(OptimizerConfigError, match="lr"):
        build_optimizer("sgd", [{"params": p}], -1.0)
