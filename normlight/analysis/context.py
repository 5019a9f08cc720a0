"""The analysis engine: evaluation batches, the hidden-state cache, layer plans, their evaluation, healing.

A :class:`Plan` says what runs instead of blocks ``0..L-1`` in order: a sequence of steps, each one block index
or a tuple of indices run in parallel on the same input with their outputs averaged (Painters), plus
sub-layers whose output is set to zero (``(block, "attn" | "mlp")``, FinerCut-style removal)::

    Plan.full(6)                          0 1 2 3 4 5
    Plan.without(6, removed=[2, 3])       0 1 4 5
    Plan((0, 2, 1, 3, 4, 5))              blocks 1 and 2 swapped
    Plan((0, (1, 2, 3, 4), 5))            middle blocks in parallel
    Plan.without(6, drop=[(4, "attn")])   all blocks, attention of block 4 zeroed

Cost. The streams ``h_0..h_L`` of every evaluation batch are computed once (L block calls per batch) and
cached; a plan whose first ``p`` steps are the original blocks ``0..p-1`` starts from the cached ``h_p``, so
removing block ``k`` costs ``L-1-k`` block calls per batch instead of ``L-1``. ``ctx.block_calls`` counts
every block call (the cost of an analysis in forward passes is ``block_calls / (L * batches)``), which the
report records; healing adds ``heal_steps`` training steps (forward + backward) per healed point.
Memory: ``(L+1) * batches`` streams of ``batch x tokens x dim`` floats.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from normlight.analysis.layers import AnalysisInputError, LayerModel

SUBLAYERS = ("attn", "mlp")


@dataclass(frozen=True)
class Plan:
    """Which blocks run, in which order (a step is an index or a tuple run in parallel), and which sub-layers
    are zeroed."""

    steps: tuple
    drop: frozenset = field(default_factory=frozenset)

    @staticmethod
    def full(depth: int) -> "Plan":
        """Every block once, in order."""
        return Plan(tuple(range(depth)))

    @staticmethod
    def without(depth: int, removed: Iterable[int] = (), drop: Iterable[tuple[int, str]] = ()) -> "Plan":
        """The blocks not in ``removed``, in order, with the sub-layers ``drop`` zeroed."""
        gone = set(removed)
        return Plan(tuple(i for i in range(depth) if i not in gone), frozenset(drop))

    def start(self) -> int:
        """Length ``p`` of the unchanged prefix (steps ``0..p-1`` are blocks ``0..p-1``, none with a zeroed
        sub-layer): the cached ``h_p`` is this plan's stream after ``p`` steps."""
        touched = {i for i, _ in self.drop}
        p = 0
        while p < len(self.steps) and self.steps[p] == p and p not in touched:
            p += 1
        return p


@dataclass
class Eval:
    """Validation loss and top-1 accuracy of a plan over the evaluation batches; ``out_distance`` is the mean
    angular distance between its logits and the full model's (when asked for)."""

    loss: float
    acc: float
    n: int
    out_distance: float = float("nan")


@contextlib.contextmanager
def dropped_sublayers(layers: LayerModel, drop: Iterable[tuple[int, str]]):
    """Zero the output of each sub-layer in ``drop`` while the context is open (forward hooks, removed after)."""
    handles = []
    try:
        for i, kind in sorted(drop):
            mod = layers.branch(i, kind) if kind in SUBLAYERS else None
            if mod is None:
                raise AnalysisInputError(f"block {i} ({type(layers.blocks[i]).__name__}) has no {kind!r} sub-layer")
            handles.append(mod.register_forward_hook(lambda m, args, out: torch.zeros_like(out)))
        yield
    finally:
        for h in handles:
            h.remove()


def angular(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """arccos(cos(a, b)) / pi along the last dim, in [0, 1]. In float64: arccos near cos = 1 turns a float32
    rounding error of 1e-7 into a distance of 1e-4; clamped to [-1, 1] against the remaining rounding."""
    cos = F.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-12)
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


class AnalysisContext:
    """What every analysis receives: the layer view, the evaluation batches, the cache and the plan runner.

    Args:
        layers: the model's :class:`~normlight.analysis.layers.LayerModel`.
        batches: evaluation batches ``(inputs, targets)`` (moved to the model's device).
        train_batches: a callable returning a fresh iterator of training batches (for healing), or None.
        seed: seed of random orders and of healing runs.
    """

    def __init__(
        self,
        layers: LayerModel,
        batches: list,
        train_batches: Callable[[], Iterator] | None = None,
        seed: int = 0,
    ):
        if not batches:
            raise AnalysisInputError("layer analysis needs at least one evaluation batch; the data gave none")
        self.layers = layers
        self.device = next(layers.model.parameters()).device
        self.batches = [(x.to(self.device), y.to(self.device)) for x, y in batches]
        self.train_batches = train_batches
        self.seed = seed
        self.block_calls = 0
        self.memo: dict = {}
        self._states: list[list[torch.Tensor]] | None = None
        self._reference: list[torch.Tensor] | None = None
        layers.model.eval()

    @property
    def depth(self) -> int:
        """Number of blocks L."""
        return self.layers.depth

    # ------------------------------------------------------------------ the cache
    @torch.no_grad()
    def states(self) -> list[list[torch.Tensor]]:
        """``states()[b][l]`` = ``h_l`` of batch ``b`` for l = 0..L (computed once)."""
        if self._states is None:
            self.layers.model.eval()
            out = []
            for x, _ in self.batches:
                h = self.layers.embed(x)
                hs = [h]
                for i in range(self.depth):
                    h = self.layers.block(i, h)
                    hs.append(h)
                self.block_calls += self.depth
                out.append(hs)
            self._states = out
        return self._states

    @torch.no_grad()
    def reference_logits(self) -> list[torch.Tensor]:
        """The full model's logits per batch (read out from the cached ``h_L``)."""
        if self._reference is None:
            self._reference = [self.layers.readout(hs[-1]) for hs in self.states()]
        return self._reference

    def baseline(self) -> Eval:
        """Loss and accuracy of the full model."""
        if "baseline" not in self.memo:
            self.memo["baseline"] = self.evaluate(Plan.full(self.depth))
        return self.memo["baseline"]

    # ------------------------------------------------------------------ running plans
    def run_steps(self, layers: LayerModel, steps: Iterable, h: torch.Tensor) -> torch.Tensor:
        """Apply ``steps`` (indices or parallel tuples) to the stream ``h``."""
        for step in steps:
            if isinstance(step, tuple):
                outs = [layers.block(i, h) for i in step]
                self.block_calls += len(step)
                h = torch.stack(outs).mean(0)
            else:
                h = layers.block(step, h)
                self.block_calls += 1
        return h

    def forward(self, layers: LayerModel, plan: Plan, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``plan`` on inputs ``x`` from scratch (no cache)."""
        with dropped_sublayers(layers, plan.drop):
            return layers.readout(self.run_steps(layers, plan.steps, layers.embed(x)))

    @torch.no_grad()
    def evaluate(self, plan: Plan, output_distance: bool = False) -> Eval:
        """Loss and accuracy of ``plan`` on the evaluation batches, starting from the cached stream."""
        self.layers.model.eval()
        p = plan.start()
        states = self.states()
        refs = self.reference_logits() if output_distance else None
        loss = correct = 0.0
        n = 0
        dist, dist_n = 0.0, 0
        with dropped_sublayers(self.layers, plan.drop):
            for b, (_, y) in enumerate(self.batches):
                logits = self.layers.readout(self.run_steps(self.layers, plan.steps[p:], states[b][p]))
                bl, bc, bn = self.layers.loss_terms(logits, y)
                loss, correct, n = loss + bl, correct + bc, n + bn
                if refs is not None:
                    d = angular(logits, refs[b])
                    dist, dist_n = dist + float(d.sum()), dist_n + d.numel()
        return Eval(loss / n, correct / n, n, dist / dist_n if dist_n else float("nan"))

    # ------------------------------------------------------------------ healing
    def heal(self, plan: Plan, steps: int, lr: float, weight_decay: float = 0.0) -> Eval:
        """Fine-tune a copy of the model run as ``plan`` for ``steps`` AdamW steps on the training batches
        (gradient clipping 1.0, the placement's ``after_optimizer_step`` hook), then evaluate it. The original
        model is untouched; every healing run sees the same data order (seeded)."""
        if self.train_batches is None:
            raise AnalysisInputError("healing (heal_steps > 0) needs training data; the data source gave none")
        view = self.layers.copy()
        model = view.model
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        hook = getattr(getattr(model, "placement_cls", None), "after_optimizer_step", None)
        torch.manual_seed(self.seed)
        model.train()
        it = iter(self.train_batches())
        for _ in range(steps):
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(self.train_batches())
                x, y = next(it)
            x, y = x.to(self.device), y.to(self.device)
            logits = self.forward(view, plan, x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if hook is not None:
                hook(model)
        model.eval()
        total = correct = 0.0
        n = 0
        with torch.no_grad():
            for x, y in self.batches:
                bl, bc, bn = view.loss_terms(self.forward(view, plan, x), y)
                total, correct, n = total + bl, correct + bc, n + bn
        return Eval(total / n, correct / n, n)
