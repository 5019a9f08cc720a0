"""Record fixed-seed forwards of today's GPT and ViT (every placement, every pooling) into reference_outputs.pt.

Run ONCE, on the code before a change that must not alter default models (it was run on commit d68d351,
before poolings, residuals, mixers and depth regularizers became plugin kinds); never re-run it to make
``test_reference_outputs.py`` pass, or the test compares the new code with itself::

    .venv/bin/python -m tests.models.record_reference_outputs
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

import normlight

OUT = Path(__file__).with_name("reference_outputs.pt")
PLACEMENTS = [
    "pre",
    "post",
    "peri",
    "sandwich",
    "mix",
    "lns",
    "none",
    "normformer",
    "deepnorm",
    "subln",
    "hybrid",
    "rezero",
    "skipinit",
    "ngpt",
]
SHAPE = dict(depth=4, dim=32, num_heads=2, mlp_ratio=2.0)


def cases() -> dict[str, tuple[str, dict]]:
    """Case name -> (preset, kwargs). Every case is built after torch.manual_seed(0)."""
    out = {}
    for p in PLACEMENTS:
        out[f"gpt/{p}"] = ("gpt-nano", dict(placement=p, max_seq_len=8, vocab_size=16, **SHAPE))
        out[f"vit/{p}"] = ("vit-tiny", dict(placement=p, img_size=8, patch_size=4, num_classes=5, **SHAPE))
    out["gpt/default"] = ("gpt-nano", {})
    out["gpt/rope_qknorm"] = ("gpt-nano", dict(pos="rope", qk_norm="rmsnorm", max_seq_len=8, vocab_size=16, **SHAPE))
    out["gpt/hybrid_star"] = (
        "gpt-nano",
        dict(placement="hybrid", placement_kwargs={"star": True}, vocab_size=16, **SHAPE),
    )
    out["gpt/normformer_scaled"] = (
        "gpt-nano",
        dict(placement="normformer", placement_kwargs={"scale_resids": True}, vocab_size=16),
    )
    out["gpt/rmsnorm_untied"] = ("gpt-nano", dict(norm="rmsnorm", tie_weights=False, vocab_size=16, **SHAPE))
    out["vit/default"] = ("vit-tiny", dict(depth=2, dim=32, num_heads=2, img_size=16))
    for pool in ("cls", "mean", "gem"):
        out[f"vit/pool_{pool}"] = ("vit-tiny", dict(pool=pool, img_size=8, patch_size=4, **SHAPE))
    out["vit/lape_dpn"] = ("vit-tiny", dict(lape=True, dual_patchnorm=True, img_size=8, patch_size=4, **SHAPE))
    return out


def inputs(name: str, model) -> torch.Tensor:
    """A fixed input for the case (token ids for GPT, images for ViT)."""
    g = torch.Generator().manual_seed(1)
    if name.startswith("gpt/"):
        return torch.randint(0, model.vocab_size, (2, min(8, model.max_seq_len)), generator=g)
    return torch.randn(2, model.in_chans, model.img_size, model.img_size, generator=g)


def build(preset: str, kwargs: dict):
    """The model of a case, in eval mode."""
    torch.manual_seed(0)
    return normlight.create_model(preset, **kwargs).eval()


def keys_digest(model) -> str:
    """sha1 of the state_dict keys in order (a default model must not gain or rename parameters or buffers)."""
    return hashlib.sha1("\n".join(model.state_dict()).encode()).hexdigest()


def main() -> None:
    """Write one flat tensor of every case's logits plus, per case, its shape and a digest of its state_dict keys."""
    torch.set_num_threads(1)
    outs, meta = [], {}
    for name, (preset, kwargs) in cases().items():
        model = build(preset, kwargs)
        with torch.no_grad():
            out = model(inputs(name, model))
        outs.append(out.flatten())
        meta[name] = {"shape": list(out.shape), "keys_sha1": keys_digest(model)}
    torch.save({"flat": torch.cat(outs), "cases": meta}, OUT)
    print(f"wrote {len(meta)} cases to {OUT}")


if __name__ == "__main__":
    main()
