"""The layer view (embed -> blocks -> readout) reproduces each family's own forward, for every kind of block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlight.analysis import AnalysisInputError, LayerModel, as_layer_model, register_family
from normlight.analysis.layers import FAMILIES
from tests.analysis.models import image_batches, lm_batches, tiny_gpt, tiny_vit


@pytest.mark.parametrize("placement", ["pre", "post", "peri", "lns", "normformer", "ngpt"])
def test_gpt_view_equals_the_model(placement, one_thread):
    model = tiny_gpt(placement, pos="rope" if placement == "ngpt" else "learned")
    x, _ = lm_batches(1)[0]
    view = as_layer_model(model)
    assert view.family == "gpt" and view.depth == 4
    torch.testing.assert_close(view.forward(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("kw", [{}, {"pool": "mean"}, {"pool": "gem"}, {"lape": True}], ids=str)
def test_vit_view_equals_the_model(kw, one_thread):
    model = tiny_vit(**kw)
    x, _ = image_batches(1)[0]
    torch.testing.assert_close(as_layer_model(model).forward(x), model(x), rtol=0, atol=0)


def test_unknown_family_is_a_clear_error_and_register_family_adds_one():
    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
            self.head = nn.Linear(4, 3)

    with pytest.raises(AnalysisInputError, match="no adapter for model family None.*register_family"):
        as_layer_model(Stack())

    class StackLayers(LayerModel):
        task = "classification"

        def embed(self, x):
            return x

        def readout(self, h):
            return self.model.head(h)

        def summary(self, h):
            return h

    try:
        register_family("stack", StackLayers)
        view = as_layer_model(Stack(), family="stack")
        x = torch.randn(5, 4)
        m = view.model
        torch.testing.assert_close(view.forward(x), m.head(m.blocks[1](m.blocks[0](x))))
    finally:
        FAMILIES.pop("stack", None)
