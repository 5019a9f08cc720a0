"""nanoGPT ckpt.pt in and out, against an independent reference of its format and math (tests/models/nanogpt_layout.py):
``_orig_mod.`` prefixes, the padded 50304 vocabulary, bias=True/False (no norm biases either), float64 logits,
loss and gradients, and the export read back by the same reference."""

import pytest
import torch
import torch.nn.functional as F

from normlight.errors import CheckpointError
from normlight.models import export_pretrained, load_pretrained
from tests.models import nanogpt_layout as ref

pytestmark = pytest.mark.usefixtures("one_thread")


def idx(vocab=50304, seed=1):
    return torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bias", [True, False])
def test_logits_loss_grads_equal_the_reference(tmp_path, bias):
    ckpt = ref.make_checkpoint(bias=bias, compiled=True, masks=bias)
    torch.save(ckpt, tmp_path / "ckpt.pt")
    model = load_pretrained(f"nanogpt:{tmp_path / 'ckpt.pt'}")
    assert model.vocab_size == 50304 and model.spec["mlp"] == "gelu" and model.spec["bias"] is bias
    assert model.head.weight is model.tok_emb.weight
    if not bias:  # nanoGPT's bias=False: no bias in any linear or LayerNorm
        assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]
    model.eval()
    x, y = idx(), idx(seed=2)
    state = {k: v.clone().requires_grad_(True) for k, v in ckpt["model"].items() if v.is_floating_point()}
    wte = state["_orig_mod.transformer.wte.weight"]
    state["_orig_mod.lm_head.weight"] = wte  # keep the tie in the reference's autograd graph
    expected = ref.forward({**ckpt, "model": state}, x)
    got = model(x)
    assert (expected - got).abs().max() <= 1e-10 and expected.abs().max() > 1e-3
    loss_ref = F.cross_entropy(expected.flatten(0, 1), y.flatten())
    loss = F.cross_entropy(got.flatten(0, 1), y.flatten())
    assert abs(loss_ref.item() - loss.item()) <= 1e-10
    loss_ref.backward(), loss.backward()
    assert (wte.grad - model.tok_emb.weight.grad).abs().max() <= 1e-10
    fc = state["_orig_mod.transformer.h.1.mlp.c_fc.weight"]
    assert (fc.grad - model.blocks[1].mlp.fc1.weight.grad).abs().max() <= 1e-10
    ln1 = state["_orig_mod.transformer.h.0.ln_1.weight"]
    assert (ln1.grad - model.blocks[0].norm1.weight.grad).abs().max() <= 1e-10


@pytest.mark.parametrize("bias", [True, False])
def test_export_round_trip(tmp_path, bias):
    ckpt = ref.make_checkpoint(bias=bias, compiled=False, vocab_size=97, seed=3)
    torch.save(ckpt, tmp_path / "ckpt.pt")
    model = load_pretrained(f"nanogpt:{tmp_path / 'ckpt.pt'}").eval()
    out = export_pretrained(model, tmp_path / "out" / "ckpt.pt", format="nanogpt")
    back = torch.load(out, weights_only=True)
    assert back["model_args"] == {k: v for k, v in ckpt["model_args"].items()}
    assert set(back["model"]) == set(ckpt["model"])
    x = idx(vocab=97)
    assert (ref.forward(back, x) - model(x)).abs().max() <= 1e-10


def test_refusals(tmp_path):
    ckpt = ref.make_checkpoint(vocab_size=97, compiled=False)
    ckpt["model"]["lm_head.weight"] = ckpt["model"]["lm_head.weight"] + 1.0  # head no longer the embedding
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="pass tie_weights=False"):
        load_pretrained(f"nanogpt:{tmp_path / 'ckpt.pt'}")
    untied = load_pretrained(f"nanogpt:{tmp_path / 'ckpt.pt'}", tie_weights=False)
    assert torch.equal(untied.head.weight, ckpt["model"]["lm_head.weight"])
    with pytest.raises(CheckpointError, match="always ties"):
        export_pretrained(untied, tmp_path / "x.pt", format="nanogpt")
    torch.save({"model": {}, "other": 1}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="not a nanoGPT checkpoint"):
        load_pretrained(f"nanogpt:{tmp_path / 'bad.pt'}")
    with pytest.raises(CheckpointError, match="no such file"):
        load_pretrained(f"nanogpt:{tmp_path / 'missing.pt'}")


class Payload:
    """Stands for any pickled object (a checkpoint's code-bearing payload)."""


def test_pickled_objects_are_never_unpickled(tmp_path):
    """A checkpoint holding an arbitrary Python object is refused by weights_only=True, with one clear error."""
    torch.save({"model": {}, "model_args": {}, "evil": Payload()}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_pretrained(f"nanogpt:{tmp_path / 'ckpt.pt'}")
