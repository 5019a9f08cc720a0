"""How exactly normlight reproduces each pretrained source: max |d logits| after load_pretrained and after an
export round trip, at the real architectures' sizes, in float32 and float64.

Usage::

    .venv/bin/python benchmarks/pretrained.py           # writes benchmarks/results/pretrained.{json,md}
    .venv/bin/python benchmarks/pretrained.py --quick   # small sizes, to check the script

Method: each peer is built by its own library with random weights (transformers GPT2LMHeadModel, timm, torchvision;
nanoGPT's ckpt.pt from the independent reference in tests/models/nanogpt_layout.py), saved the way the peer saves
it, loaded with ``normlight.models.load_pretrained``, and both models run in eval mode on the same fixed input.
Then the normlight model is written back with ``export_pretrained`` and loaded by the peer's own loader. No
network (HF_HUB_OFFLINE=1); numbers are deterministic (not timings), so a loaded machine does not change them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a script: the nanoGPT reference lives in tests/models

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = ROOT / "benchmarks" / "results"


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| in float64."""
    return float((a.double() - b.double()).abs().max())


def randomized(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Random norm affine parameters and running statistics too (a fresh init has them at 1 / 0)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean") or (t.ndim == 1 and "bias" in name):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.ndim == 1 and "weight" in name:
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
    return model.to(dtype).eval()


def gpt2_case(tmp: Path, dtype, quick: bool) -> dict:
    import transformers

    from normlight.models import export_pretrained, load_pretrained
    from normlight.models.convert import to_pre_rmsnorm

    size = dict(n_layer=2, n_embd=64, n_head=4) if quick else dict(n_layer=12, n_embd=768, n_head=12)
    cfg = transformers.GPT2Config(**size, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    peer = randomized(transformers.GPT2LMHeadModel(cfg), dtype)
    peer.save_pretrained(tmp / "gpt2")
    ours = load_pretrained(f"hf:{tmp / 'gpt2'}").eval()
    x = torch.randint(0, cfg.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = peer(x).logits
        out = dict(load=diff(ref, ours(x)))
        export_pretrained(ours, tmp / "gpt2-out", format="hf")
        back = transformers.GPT2LMHeadModel.from_pretrained(tmp / "gpt2-out", dtype=dtype).eval()
        out["export"] = diff(back(x).logits, ref)
        rms = to_pre_rmsnorm(ours).eval()
        out["rmsnorm"] = diff(rms(x), ref)
        export_pretrained(rms, tmp / "gpt2-rms", format="hf")
        back = transformers.GPT2LMHeadModel.from_pretrained(tmp / "gpt2-rms", dtype=dtype).eval()
        out["rmsnorm_export"] = diff(back(x).logits, ref)
        out["scale"] = float(ref.abs().max())
    return dict(source="hf (transformers GPT2LMHeadModel)", size=str(size), **out)


def nanogpt_case(tmp: Path, dtype, quick: bool) -> dict:
    from normlight.models import export_pretrained, load_pretrained
    from tests.models import nanogpt_layout

    size = dict(n_layer=2, n_embd=64, n_head=4) if quick else dict(n_layer=12, n_embd=768, n_head=12)
    ckpt = nanogpt_layout.make_checkpoint(**size, block_size=1024, vocab_size=50304, compiled=True)
    ckpt["model"] = {k: v.to(dtype) for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp / "ckpt.pt")
    ours = load_pretrained(f"nanogpt:{tmp / 'ckpt.pt'}").eval()
    x = torch.randint(0, 50304, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = nanogpt_layout.forward(ckpt, x)
        out = dict(load=diff(ref, ours(x)))
        export_pretrained(ours, tmp / "out" / "ckpt.pt", format="nanogpt")
        back = torch.load(tmp / "out" / "ckpt.pt", weights_only=True)
        out["export"] = diff(nanogpt_layout.forward(back, x), ref)
        out["scale"] = float(ref.abs().max())
    return dict(source="nanogpt (ckpt.pt, compiled, vocab 50304)", size=str(size), **out)


def timm_case(name: str, kwargs: dict, size: int, tmp: Path, dtype) -> dict:
    import timm
    from safetensors.torch import save_file

    from normlight.models import export_pretrained, load_pretrained

    torch.manual_seed(0)
    peer = randomized(timm.create_model(name, pretrained=False, **kwargs), dtype)
    save_file(peer.state_dict(), str(tmp / f"{name}.safetensors"))
    ours = load_pretrained(f"timm:{name}:{tmp / f'{name}.safetensors'}", **kwargs).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        ref = peer(x)
        out = dict(load=diff(ref, ours(x)))
        export_pretrained(ours, tmp / f"{name}-out", format="timm")
        back = timm.create_model(f"local-dir:{tmp / f'{name}-out'}", pretrained=True, dtype=dtype).eval()
        out["export"] = diff(back(x), ref)
        out["scale"] = float(ref.abs().max())
    return dict(source=f"timm {name}", size=str(kwargs or "default"), **out)


def torchvision_case(name: str, tmp: Path, dtype) -> dict:
    import torchvision

    from normlight.models import export_pretrained, load_pretrained

    torch.manual_seed(0)
    peer = randomized(getattr(torchvision.models, name)(weights=None), dtype)
    torch.save(peer.state_dict(), tmp / f"{name}.pth")
    ours = load_pretrained(f"torchvision:{name}:{tmp / f'{name}.pth'}").eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        ref = peer(x)
        out = dict(load=diff(ref, ours(x)))
        export_pretrained(ours, tmp / f"{name}-out.pth", format="torchvision")
        back = getattr(torchvision.models, name)(weights=None).to(dtype).eval()
        back.load_state_dict(torch.load(tmp / f"{name}-out.pth", weights_only=True))
        out["export"] = diff(back(x), ref)
        out["scale"] = float(ref.abs().max())
    return dict(source=f"torchvision {name}", size="ImageNet (1000 classes)", **out)


def main(argv: list[str] | None = None) -> int:
    """Measure every source in float32 and float64; write JSON + markdown (unless --quick)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, print only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    vit = dict(img_size=32, patch_size=4, depth=2) if args.quick else {}
    for dtype in (torch.float32, torch.float64):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            cases = [
                lambda: gpt2_case(tmp, dtype, args.quick),
                lambda: nanogpt_case(tmp, dtype, args.quick),
                lambda: timm_case("vit_small_patch16_224", vit, 32 if args.quick else 224, tmp, dtype),
                lambda: timm_case("resnet50", {}, 64 if args.quick else 224, tmp, dtype),
            ]
            if not args.quick:
                cases += [
                    lambda: torchvision_case("resnet18", tmp, dtype),
                    lambda: torchvision_case("resnet50", tmp, dtype),
                ]
            for case in cases:
                row = dict(case(), dtype=str(dtype).removeprefix("torch."))
                print(json.dumps(row))
                rows.append(row)
    if args.quick:
        return 0
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__,
        machine=platform.machine(),
        command="benchmarks/pretrained.py",
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrained.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n")
    lines = [
        "# Pretrained sources: max |d logits| of normlight vs the peer",
        "",
        f"{meta['date']}, torch {meta['torch']}, `{meta['command']}`. Random weights at the real sizes, eval mode,",
        "a fixed input; `load`: normlight after `load_pretrained` vs the peer; `export`: the peer's own loader on",
        "`export_pretrained`'s output vs the original peer; GPT-2 also after `to_pre_rmsnorm` and its export.",
        "",
        "| source | dtype | load | export | Pre-RMSNorm | Pre-RMSNorm export | max abs logit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rms = [f"{r[k]:.2g}" if k in r else "" for k in ("rmsnorm", "rmsnorm_export")]
        lines.append(
            f"| {r['source']} | {r['dtype']} | {r['load']:.2g} | {r['export']:.2g} | {rms[0]} | {rms[1]} | {r['scale']:.3g} |"
        )
    (RESULTS / "pretrained.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "pretrained.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
