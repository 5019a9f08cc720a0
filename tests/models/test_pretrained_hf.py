"""Hugging Face GPT-2 in and out: transformers builds and saves the peer (random weights), normlight loads it
without importing transformers, and logits, loss and gradients agree in float64; exports load back in transformers."""

import json
import sys

import pytest
import torch
import torch.nn.functional as F

from normlight import create_model
from normlight.errors import CheckpointError
from normlight.models import export_pretrained, load_pretrained
from normlight.models.convert import to_pre_rmsnorm

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, CTX = 61, 16


def gpt2(seed=0, **overrides):
    """A random-weight transformers GPT2LMHeadModel (2 layers, dim 32), float64, eval mode."""
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, n_positions=CTX, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, **overrides
    )
    model = transformers.GPT2LMHeadModel(cfg).double().eval()
    with torch.no_grad():  # LayerNorm affine parameters away from their 1/0 init, so a mix-up would show
        for name, p in model.named_parameters():
            if ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def tokens(seed=1, n=2):
    return torch.randint(0, VOCAB, (n, CTX), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The peer and the directory it was saved to with save_pretrained (config.json + model.safetensors)."""
    path = tmp_path_factory.mktemp("gpt2")
    model = gpt2()
    model.save_pretrained(path)
    return model, path


def test_logits_loss_and_grads_equal_in_float64(saved, monkeypatch):
    ref, path = saved
    monkeypatch.setitem(sys.modules, "transformers", None)  # reading must not need transformers
    ours = load_pretrained(f"hf:{path}")
    monkeypatch.undo()
    assert ours.spec["mlp"] == "gelu_tanh" and ours.spec["norm_kwargs"] == {"eps": 1e-5}
    assert ours.head.weight is ours.tok_emb.weight and next(ours.parameters()).dtype == torch.float64
    ours.eval()
    x = tokens()
    ref_logits, our_logits = ref(x).logits, ours(x)
    assert (ref_logits - our_logits).abs().max() <= 1e-10
    assert ref_logits.abs().max() > 0.1  # a real signal
    y = tokens(seed=2)
    ref_loss = F.cross_entropy(ref_logits.flatten(0, 1), y.flatten())
    our_loss = F.cross_entropy(our_logits.flatten(0, 1), y.flatten())
    assert abs(ref_loss.item() - our_loss.item()) <= 1e-10
    ref_loss.backward(), our_loss.backward()
    pairs = [  # HF's Conv1D weights are stored transposed
        (ref.transformer.wte.weight.grad, ours.tok_emb.weight.grad),
        (ref.transformer.wpe.weight.grad, ours.pos_emb.weight.grad),
        (ref.transformer.h[1].attn.c_attn.weight.grad.t(), ours.blocks[1].attn.qkv.weight.grad),
        (ref.transformer.h[0].mlp.c_proj.weight.grad.t(), ours.blocks[0].mlp.fc2.weight.grad),
        (ref.transformer.h[0].ln_1.bias.grad, ours.blocks[0].norm1.bias.grad),
        (ref.transformer.ln_f.weight.grad, ours.norm.weight.grad),
    ]
    for a, b in pairs:
        assert (a - b).abs().max() <= 1e-10


def test_exact_gelu_would_differ(saved):
    """The tanh GELU is what makes it exact: the same weights with erf GELU are visibly off."""
    ref, path = saved
    ours = load_pretrained(f"hf:{path}", mlp="gelu").eval()
    assert (ref(tokens()).logits - ours(tokens())).abs().max() > 1e-6


def test_export_round_trip_and_rmsnorm_conversion(saved, tmp_path):
    ref, path = saved
    ours = load_pretrained(f"hf:{path}").eval()
    x = tokens()
    export_pretrained(ours, tmp_path / "plain", format="hf")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "plain", dtype=torch.float64).eval()
    assert (back(x).logits - ours(x)).abs().max() <= 1e-10
    # Pre-RMSNorm conversion (normlight.models.convert) exports exactly: LN == RMSNorm on a zero-mean stream
    rms = to_pre_rmsnorm(ours).eval()
    assert (rms(x) - ours(x)).abs().max() <= 1e-10
    export_pretrained(rms, tmp_path / "rms", format="hf")
    assert json.loads((tmp_path / "rms" / "config.json").read_text())["tie_word_embeddings"] is False
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "rms", dtype=torch.float64).eval()
    assert (back(x).logits - ref(x).logits).abs().max() <= 1e-10
    # once the stream is no longer zero-mean, RMSNorm has no LayerNorm form: refused, naming a writer
    with torch.no_grad():
        rms.blocks[0].mlp.fc2.bias.add_(0.5)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.mlp\.fc2\.bias"):
        export_pretrained(rms, tmp_path / "drifted", format="hf")
    # a norm-free (LN-removed) GPT has no GPT-2 form: GPT-2's LayerNorm always normalizes
    with pytest.raises(CheckpointError, match="Identity; the hf layout holds LayerNorms only"):
        export_pretrained(create_model("gpt-nano", norm="identity"), tmp_path / "x", format="hf")


def test_untied_bin_checkpoint(tmp_path):
    """An untied GPT-2 saved as pytorch_model.bin (read with weights_only=True) loads untied."""
    ref = gpt2(seed=3, tie_word_embeddings=False, activation_function="gelu")
    with torch.no_grad():
        ref.lm_head.weight.add_(0.5)
    (tmp_path / "config.json").write_text(ref.config.to_json_string())
    torch.save({k: v for k, v in ref.state_dict().items()}, tmp_path / "pytorch_model.bin")
    ours = load_pretrained(f"hf:{tmp_path}").eval()
    assert ours.head.weight is not ours.tok_emb.weight and ours.spec["mlp"] == "gelu"
    assert (ref(tokens()).logits - ours(tokens())).abs().max() <= 1e-10
    with pytest.raises(CheckpointError, match="tie_weights=False"):
        load_pretrained(f"hf:{tmp_path}", tie_weights=True)


def test_tied_config_with_a_different_head_is_refused(saved, tmp_path):
    ref, _ = saved
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    state["lm_head.weight"] += 1.0
    (tmp_path / "config.json").write_text(ref.config.to_json_string())
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="lm_head.weight differs from its wte.weight"):
        load_pretrained(f"hf:{tmp_path}")
    untied = load_pretrained(f"hf:{tmp_path}", tie_weights=False)
    assert torch.equal(untied.head.weight, state["lm_head.weight"])


def test_hub_id_from_the_offline_cache(saved, tmp_path, monkeypatch):
    """``hf:<org>/<name>`` goes through huggingface_hub; offline it finds a snapshot in the Hub cache."""
    import huggingface_hub.constants as hub

    ref, path = saved
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--tiny-gpt2"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        (snap / name).write_bytes((path / name).read_bytes())
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    ours = load_pretrained("hf:someone/tiny-gpt2").eval()
    assert (ref(tokens()).logits - ours(tokens())).abs().max() <= 1e-10
    with pytest.raises(CheckpointError, match="only models already in the Hub cache"):
        load_pretrained("hf:someone/not-cached")


def test_clear_errors(saved, tmp_path):
    ref, path = saved
    with pytest.raises(CheckpointError, match="unknown pretrained source"):
        load_pretrained("gpt2")
    with pytest.raises(CheckpointError, match="not a directory"):
        load_pretrained(f"hf:{tmp_path / 'missing' / 'dir'}")
    cfg = json.loads((path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "scale_attn_by_inverse_layer_idx": True}))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="scale_attn_by_inverse_layer_idx"):
        load_pretrained(f"hf:{tmp_path}")
    state = dict(ref.state_dict())
    state["transformer.h.0.crossattention.c_attn.weight"] = torch.zeros(2)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="crossattention"):
        load_pretrained(f"hf:{tmp_path}")
    with pytest.raises(CheckpointError, match="shapes differ.*pos_emb"):
        load_pretrained(f"hf:{path}", max_seq_len=8)


def test_norm_rmsnorm_converts_exactly(saved):
    """``norm="rmsnorm"`` / ``"crmsnorm"`` on a GPT-2 source: the exact Pre-(C)RMSNorm conversion, same logits."""
    ref, path = saved
    x = tokens()
    for norm in ("rmsnorm", "crmsnorm"):
        ours = load_pretrained(f"hf:{path}", norm=norm).eval()
        assert ours.spec["norm"] == norm and type(ours.norm).__name__ == (
            "RMSNorm" if norm == "rmsnorm" else "CRMSNorm"
        )
        assert (ref(x).logits - ours(x)).abs().max() <= 1e-10
    with pytest.raises(CheckpointError, match="takes no norm_kwargs"):
        load_pretrained(f"hf:{path}", norm="rmsnorm", norm_kwargs={"eps": 1e-6})
    with pytest.raises(CheckpointError, match="does not fit"):  # post-LN has no final norm for ln_f
        load_pretrained(f"hf:{path}", norm="rmsnorm", placement="post")


def test_sharded_safetensors(saved, tmp_path):
    ref, _ = saved
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    ours = load_pretrained(f"hf:{tmp_path}").eval()
    assert (ref(tokens()).logits - ours(tokens())).abs().max() <= 1e-10
