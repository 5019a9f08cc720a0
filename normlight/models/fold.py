"""Inference folding: merge eval-mode batch-statistic norms into an adjacent conv or linear layer.

In eval mode a BatchNorm-like norm (batchnorm, repbn, powernorm, torch.nn.BatchNorm*d, ...) is a
fixed per-channel affine map ``y = a * x + b``. If its input is the output of a conv/linear that
nothing else reads, the affine goes into that layer (``W' = a W``, ``b' = a b_conv + b``);
otherwise, if its output is read only by linear layers (a pre-norm transformer block: norm -> qkv),
it goes into them (``W' = W diag(a)``, ``b' = b_lin + W b``). The norm becomes ``nn.Identity``.

How adjacency is found without parsing code: one forward on an example input with hooks on the
convs, linears and candidate norms records which tensor object each consumed and produced; the
autograd graph of that forward tells whether anything else read the same tensor. ``a`` and ``b`` are
measured from the module itself (``b = f(0)``, ``a = f(1) - f(0)``) and accepted only if ``f(x)``
equals ``a * x + b`` on the recorded input, so no knowledge of a plugin's internals is needed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from normlight.errors import NormlightError
from normlight.layers.ws import conv_with_same_weights

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
PLAIN_FORWARDS = (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward)


def plain_layer(m: nn.Module) -> bool:
    """A conv/linear computing exactly ``W x + b`` with its stored weight (or a WS conv we can bake)."""
    return isinstance(m, LAYERS) and (type(m).forward in PLAIN_FORWARDS or hasattr(m, "standardized_weight"))


def is_batch_stat_norm(m: nn.Module) -> bool:
    """A norm whose eval-mode map is fixed by running statistics (the candidates for folding)."""
    return isinstance(m, nn.modules.batchnorm._BatchNorm) or getattr(m, "uses_batch_statistics", False) is True


@dataclass
class Call:
    """One recorded module call: what it read and wrote (tensor objects, versions, autograd nodes)."""

    name: str
    inp: torch.Tensor
    inp_version: int
    out: torch.Tensor
    out_version: int
    out_node: object
    repeated: bool = False  # called more than once: never folded
    extra_args: bool = False


def make_example_input(model: nn.Module) -> torch.Tensor:
    """A small input from the model interface: images for vision families, token ids for GPT."""
    ref = next(model.parameters(), None)
    device = ref.device if ref is not None else "cpu"
    if getattr(model, "family", None) == "gpt":
        return torch.randint(model.vocab_size, (2, min(8, model.max_seq_len)), device=device)
    if hasattr(model, "in_chans") and hasattr(model, "img_size"):
        size = model.img_size if isinstance(model.img_size, (tuple, list)) else (model.img_size, model.img_size)
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        return torch.randn(2, model.in_chans, *size, device=device, dtype=dtype)
    raise NormlightError(
        f"fold: cannot make an example input for {type(model).__name__} (it has no family/img_size/"
        "vocab_size attributes); pass example_input="
    )


def record(model: nn.Module, x) -> tuple[dict[str, Call], torch.Tensor]:
    """Run ``model(x)`` with grad and hooks on convs, linears and top-level candidate norms."""
    names = {m: n for n, m in model.named_modules()}
    norms = [n for n, m in model.named_modules() if is_batch_stat_norm(m)]
    outer = {n for n in norms if not any(n.startswith(o + ".") for o in norms if o != n)}
    calls: dict[str, Call] = {}

    def hook(mod, args, kwargs, out):
        name = names[mod]
        if name in calls:
            calls[name].repeated = True
            return
        extra = len(args) != 1 or any(v is not None for v in kwargs.values())
        calls[name] = Call(name, args[0], args[0]._version, out, out._version, out.grad_fn, extra_args=extra)

    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for n, m in model.named_modules()
        if n in outer or (isinstance(m, LAYERS) and not any(n.startswith(o + ".") for o in outer))
    ]
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(True)
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return calls, out


MODEL_OUTPUT = object()  # the reader standing for whoever receives the model's outputs


def consumers(outputs) -> dict:
    """For every autograd node reachable from ``outputs``: the list of nodes that read it (``MODEL_OUTPUT`` for
    the nodes whose tensors are returned)."""
    tensors = list(_flatten(outputs))
    roots = [t.grad_fn for t in tensors if t.grad_fn is not None]
    readers: dict = {}
    seen, stack = set(), list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None:
                readers.setdefault(child, []).append(node)
                stack.append(child)
    for root in roots:  # the caller reads the model's outputs too: a returned tensor must not change
        readers.setdefault(root, []).append(MODEL_OUTPUT)
    return readers


def _flatten(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _flatten(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _flatten(o)


def inside(start, stop) -> set:
    """Autograd nodes reachable backward from ``start`` without passing ``stop``: one module's own ops."""
    own, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node is None or node is stop or node in own:
            continue
        own.add(node)
        stack += [child for child, _ in node.next_functions]
    return own


def per_channel_affine(norm: nn.Module, sample: torch.Tensor, channel_dim: int):
    """(a, b) with norm(x) == a * x + b per channel along ``channel_dim``, or None if it is not such a map."""
    with torch.no_grad():
        zeros = torch.zeros_like(sample)
        b_full = norm(zeros)
        a_full = norm(torch.ones_like(sample)) - b_full
        rows = lambda t: t.movedim(channel_dim, -1).reshape(-1, t.shape[channel_dim])  # noqa: E731
        a, b = rows(a_full)[0], rows(b_full)[0]
        if not (
            torch.allclose(rows(a_full), a.expand_as(rows(a_full)))
            and torch.allclose(rows(b_full), b.expand_as(rows(b_full)))
        ):
            return None
        shape = [1] * sample.ndim
        shape[channel_dim] = -1
        expected = sample * a.view(shape) + b.view(shape)
        got = norm(sample)
        tol = 1e-5 * max(1.0, got.abs().max().item())
        if got.shape != sample.shape or not torch.allclose(got, expected, rtol=1e-4, atol=tol):
            return None
    return a, b


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)  # get_submodule('') is the model


def _into_preceding(model: nn.Module, layer_name: str, layer: nn.Module, a: torch.Tensor, b: torch.Tensor) -> None:
    # y = a * (W x + c) + b  ->  (a W) x + (a c + b), a along the layer's output dim (0 for conv and linear)
    if hasattr(layer, "standardized_weight"):
        layer = conv_with_same_weights(layer)  # WS convs: bake the standardized kernel first
    with torch.no_grad():
        w = layer.weight
        layer.weight.copy_(w * a.view(-1, *[1] * (w.ndim - 1)))  # copy_ casts to the weight's dtype
        old = layer.bias if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        layer.bias = nn.Parameter(old * a.to(w.dtype) + b.to(w.dtype))
    _set(model, layer_name, layer)


def _into_following(layer: nn.Linear, a: torch.Tensor, b: torch.Tensor) -> None:
    # W (a * x + b) + c  ->  (W diag(a)) x + (W b + c)
    with torch.no_grad():
        w = layer.weight
        shift = w @ b.to(w.dtype)
        layer.weight.copy_(w * a)  # copy_ casts to the weight's dtype
        old = layer.bias if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        layer.bias = nn.Parameter(old + shift)


def fold(model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """Return an eval-mode COPY of ``model`` with batch-statistic norms folded into adjacent layers.

    The original model is not modified. The copy's output equals the original's eval-mode output
    (checked on ``example_input`` before returning; built from the model interface if not given).
    Norms that cannot be folded (not a per-channel affine in eval, or sitting between ops that are
    not conv/linear, e.g. on a residual stream read by several layers) stay as they are; the names of
    what was folded are in ``folded.folded_norms``.
    """
    folded = copy.deepcopy(model).eval()
    x = example_input if example_input is not None else make_example_input(folded)
    with torch.no_grad():
        reference = _run_eval(model, x)
    calls, out = record(folded, x)
    readers = consumers(out)
    modules = dict(folded.named_modules())
    owners: dict[int, int] = {}  # storage -> number of modules holding it (tied weights, e.g. GPT's lm_head)
    for m in modules.values():
        for p in m.parameters(recurse=False):
            owners[p.data_ptr()] = owners.get(p.data_ptr(), 0) + 1
    untied = lambda m: all(owners[p.data_ptr()] == 1 for p in m.parameters(recurse=False))  # noqa: E731
    layer_calls = {c.out_node: c for n, c in calls.items() if plain_layer(modules[n]) and untied(modules[n])}
    done: list[str] = []
    for name, call in calls.items():
        norm = modules[name]
        if not is_batch_stat_norm(norm) or call.repeated or call.extra_args:
            continue
        own = inside(call.out_node, call.inp.grad_fn)
        src = layer_calls.get(call.inp.grad_fn)
        if (
            src is not None
            and not src.repeated
            and src.out is call.inp
            and src.out_version == call.inp_version
            and all(r in own for r in readers.get(src.out_node, []))
        ):
            affine = per_channel_affine(
                norm, call.inp.detach(), 1 if not isinstance(modules[src.name], nn.Linear) else -1
            )
            if affine is not None:
                _into_preceding(folded, src.name, modules[src.name], *affine)
                _set(folded, name, nn.Identity())
                done.append(name)
                continue
        # following linears: every reader of the norm's output belongs to a linear whose input it is
        nexts = [c for c in calls.values() if c.inp is call.out and type(modules[c.name]).forward is nn.Linear.forward]
        if not nexts or any(
            c.repeated or c.inp_version != call.out_version or not untied(modules[c.name]) for c in nexts
        ):
            continue
        owned = set().union(*(inside(c.out_node, call.out_node) for c in nexts))
        if not all(r in owned for r in readers.get(call.out_node, [])):
            continue
        affine = per_channel_affine(norm, call.inp.detach(), -1)
        if affine is None:
            continue
        for c in nexts:
            _into_following(modules[c.name], *affine)
        _set(folded, name, nn.Identity())
        done.append(name)
    folded.folded_norms = done
    with torch.no_grad():
        got = folded(x)
    for r, g in zip(_flatten(reference), _flatten(got)):
        if r.is_floating_point() and not torch.allclose(r, g, rtol=1e-4, atol=1e-5 * max(1.0, r.abs().max().item())):
            raise NormlightError(
                f"fold: the folded {type(model).__name__} differs from the original by "
                f"{(r - g).abs().max().item():.3g}; please report this model"
            )
    return folded


def _run_eval(model: nn.Module, x):
    """The original model's eval-mode output, leaving its train/eval state as it was."""
    was_training = model.training
    model.eval()
    try:
        return model(x)
    finally:
        model.train(was_training)
