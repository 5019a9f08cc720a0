"""An independent reference for nanoGPT checkpoints, written from nanoGPT's published format (not its code).

``make_checkpoint`` builds what nanoGPT's train.py saves as ``ckpt.pt``: ``{"model": state_dict, "optimizer":
AdamW state, "model_args": {n_layer, n_head, n_embd, block_size, bias, vocab_size, dropout}, "iter_num",
"best_val_loss" (a tensor), "config": {...}}``, with random weights under nanoGPT's names
(``transformer.wte/wpe/h.<i>.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}/ln_f``, ``lm_head``;
``nn.Linear`` orientation; ``lm_head.weight`` is the same tensor as ``wte.weight``), optionally every key prefixed
``_orig_mod.`` (train.py with compile=True) and with the causal-mask buffers ``attn.bias`` (no flash attention).

``forward`` computes nanoGPT's logits from such a state with plain tensor ops: pre-LN blocks, LayerNorm with
eps 1e-5 and optional bias, exact (erf) GELU, causal softmax attention scaled by 1/sqrt(head_dim).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def make_checkpoint(
    n_layer=2, n_head=4, n_embd=32, block_size=16, vocab_size=50304, bias=True, compiled=True, masks=False, seed=0
) -> dict:
    """A ckpt.pt-shaped dict with random float64 weights (norm affine parameters away from 1 / 0)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.02, base=0.0):
        return base + scale * torch.randn(*shape, generator=g, dtype=torch.float64)

    sd = {}
    wte = rand(vocab_size, n_embd)
    sd["transformer.wte.weight"] = wte
    sd["transformer.wpe.weight"] = rand(block_size, n_embd)
    linears = {"attn.c_attn": (3 * n_embd, n_embd), "attn.c_proj": (n_embd, n_embd)}
    linears.update({"mlp.c_fc": (4 * n_embd, n_embd), "mlp.c_proj": (n_embd, 4 * n_embd)})
    for i in range(n_layer):
        h = f"transformer.h.{i}"
        for ln in ("ln_1", "ln_2"):
            sd[f"{h}.{ln}.weight"] = rand(n_embd, scale=0.1, base=1.0)
            if bias:
                sd[f"{h}.{ln}.bias"] = rand(n_embd, scale=0.1)
        for name, shape in linears.items():
            sd[f"{h}.{name}.weight"] = rand(*shape)
            if bias:
                sd[f"{h}.{name}.bias"] = rand(shape[0])
        if masks:
            sd[f"{h}.attn.bias"] = torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size)
    sd["transformer.ln_f.weight"] = rand(n_embd, scale=0.1, base=1.0)
    if bias:
        sd["transformer.ln_f.bias"] = rand(n_embd, scale=0.1)
    sd["lm_head.weight"] = wte  # weight tying: one tensor under two names
    if compiled:
        sd = {f"_orig_mod.{k}": v for k, v in sd.items()}
    model_args = dict(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias, vocab_size=vocab_size
    )
    model_args["dropout"] = 0.0
    optimizer = {"state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3)}}, "param_groups": []}
    config = dict(model_args, batch_size=12, learning_rate=6e-4, compile=compiled, dataset="openwebtext")
    return dict(
        model=sd,
        optimizer=optimizer,
        model_args=model_args,
        iter_num=10,
        best_val_loss=torch.tensor(3.5),
        config=config,
    )


def forward(ckpt: dict, idx: torch.Tensor) -> torch.Tensor:
    """nanoGPT's logits (B, T, V) for token ids (B, T), computed from the checkpoint's state."""
    args = ckpt["model_args"]
    sd = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    n_head, c = args["n_head"], args["n_embd"]

    def ln(x, name):
        return F.layer_norm(x, (c,), sd[f"{name}.weight"], sd.get(f"{name}.bias"), 1e-5)

    def lin(x, name):
        return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))

    b, t = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:t]
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(args["n_layer"]):
        h = f"transformer.h.{i}"
        q, k, v = lin(ln(x, f"{h}.ln_1"), f"{h}.attn.c_attn").split(c, dim=2)
        q, k, v = (z.view(b, t, n_head, c // n_head).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // n_head)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        x = x + lin(y, f"{h}.attn.c_proj")
        hidden = lin(ln(x, f"{h}.ln_2"), f"{h}.mlp.c_fc")
        x = x + lin(0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2))), f"{h}.mlp.c_proj")
    return F.linear(ln(x, "transformer.ln_f"), sd["lm_head.weight"])
