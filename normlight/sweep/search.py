"""``normlight sweep FILE --search lr-boundary``: the largest stable learning rate per variant, by bisection.

A variant is one combination of the grid's other axes (norm x placement x depth ...); its seeds are the values
of a seed axis (``seed_everything``), all trained at every LR the search probes. The LRs are a ladder, log-spaced
from ``lr_min`` to ``lr_max`` (by default the grid's own LR values, so the search and the grid probe the same
LRs).

The rule. "Stable" is exactly what ``normlight compare`` calls stable (``tracking.compare.max_stable_lr``,
reused, not copied): no seed diverged (or failed to finish) and the mean final metric is within ``tolerance`` of
the best LR's among the points trained. That rule is relative to the best loss, so the search first ANCHORS the
reference: it always trains the lowest LR of the ladder (every seed). If the anchor is itself unstable (a seed
diverged or did not finish) the answer is None, "no stable LR in the ladder", and nothing else is probed.
Otherwise it bisects in log space over the rest of the ladder (:class:`Bisection`)::

    lo = 0 (the anchor, stable), hi = above the ladder
    while hi - lo > 1:  mid = (lo + hi) // 2   -> the log-space midpoint
        train the variant at ladder[mid] (every seed)
        stable?  lo = mid  :  hi = mid

An LR is stable when the max stable LR of the points probed so far is at least that LR; the answer is the max
stable LR of every point probed. For a ladder of n LRs that is at most 1 + ceil(log2(n)) LRs per variant
instead of the grid's n (3 of 4, 5 of 9).

The assumption. The search returns the grid's answer whenever (a) the grid's best loss is at an LR the search
probed (the anchor or a bisection point) and (b) stability is monotone in the LR (stable below the boundary,
unstable above). The anchor makes (a) hold in the common case where the lowest LR trains best; when the best
loss is at an LR between probes, or the tolerance verdict flips back and forth along the ladder, the search can
answer differently from the grid (``benchmarks/lr_boundary.py`` reports both side by side).

Each probe is an ordinary grid point (same config hash and run name as in the full grid), trained through
``run_sweep`` with any launcher, so the search is exactly-once too, resumes after an interruption, and reuses
points a grid sweep already finished (and the other way round).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

from normlight.sweep.spec import Run, Sweep, SweepError, plan
from normlight.tracking import sweep_runs
from normlight.tracking.compare import max_stable_lr, stability_point

SEED_KEYS = ("seed_everything", "seed")


def ladder(sweep: Sweep, lr_key: str, lr_min=None, lr_max=None, points: int | None = None) -> list[float]:
    """The LRs to search: ``points`` log-spaced values over [lr_min, lr_max], or the grid's ``lr_key`` values."""
    if lr_min is None and lr_max is None and points is None:
        values = sweep.grid.get(lr_key)
        if not values or not all(isinstance(v, (int, float)) and v > 0 for v in values):
            raise SweepError(
                f"{sweep.path}: --search lr-boundary needs grid.{lr_key} with positive LRs, "
                "or --lr-min, --lr-max and --lr-points"
            )
        return sorted(float(v) for v in values)
    if lr_min is None or lr_max is None or not 0 < lr_min < lr_max:
        raise SweepError("--search lr-boundary: give 0 < --lr-min < --lr-max")
    n = points or 9
    if n < 2:
        raise SweepError("--lr-points must be >= 2")
    step = (math.log(lr_max) - math.log(lr_min)) / (n - 1)
    return [float(f"{math.exp(math.log(lr_min) + i * step):.4g}") for i in range(n)]


def variants(sweep: Sweep, lr_key: str) -> tuple[list[dict], str | None, list]:
    """(the variants as {axis: value}, the seed axis or None, its values)."""
    seed_axis = next((k for k in sweep.grid if k.split(".")[-1] in SEED_KEYS), None)
    axes = [k for k in sweep.grid if k not in (lr_key, seed_axis)]
    combos = [dict(zip(axes, c)) for c in itertools.product(*(sweep.grid[k] for k in axes))]
    return combos, seed_axis, (sweep.grid[seed_axis] if seed_axis else [None])


def probe_runs(sweep: Sweep, variant: dict, lr_key: str, lr: float, seed_axis: str | None, seeds: list) -> list[Run]:
    """The grid points of ``variant`` at ``lr`` (one per seed): the runs a full grid would have."""
    grid = {}
    for key in sweep.grid:  # the grid's own axis order, so names match the full grid's
        if key == lr_key:
            grid[key] = [lr]
        elif key == seed_axis:
            grid[key] = list(seeds)
        else:
            grid[key] = [variant[key]]
    if lr_key not in grid:
        grid[lr_key] = [lr]
    return plan(dataclasses.replace(sweep, grid=grid))


def variant_label(variant: dict) -> str:
    """``placement=pre`` style label of a variant (``all`` when the grid has no other axis)."""
    parts = []
    for k, v in variant.items():
        name = k.split(".")[-1]
        parts.append(f"{name}={v.get('label', v) if isinstance(v, dict) else v}")
    return ",".join(parts) or "all"


def _points(by_hash: dict, runs: list[Run], lr: float, metric: str) -> list[tuple[float, bool, float | None]]:
    out = []
    for r in runs:
        rec = by_hash.get(r.hash)
        if rec is None:  # not finished (failed, interrupted): counted as unstable
            out.append((lr, True, None))
        else:
            diverged, value = stability_point(rec, metric)
            out.append((lr, diverged, value))
    return out


@dataclasses.dataclass
class Bisection:
    """One variant's search over ``ladder`` (pure decision logic: no training, no store).

    :meth:`next_index` is the ladder index to train next (None: done), :meth:`record` takes that probe's
    (lr, diverged, final metric) points, one per seed, and :meth:`answer` is the max stable LR."""

    ladder: list[float]
    tolerance: float = 0.1
    maximize: bool = False
    points: list = dataclasses.field(default_factory=list)
    probed: list[float] = dataclasses.field(default_factory=list)
    lo: int = -1  # highest index known stable (-1: none yet)
    hi: int | None = None  # lowest index known unstable (len(ladder): none yet)

    def __post_init__(self):
        if self.hi is None:
            self.hi = len(self.ladder)

    def next_index(self) -> int | None:
        """The anchor (index 0) first; None once the anchor is unstable or the bisection has closed."""
        if not self.probed:
            return 0
        if self.lo < 0 or self.hi - self.lo <= 1:
            return None
        return (self.lo + self.hi) // 2

    def record(self, index: int, points: list[tuple[float, bool, float | None]]) -> None:
        """Add the probe at ``ladder[index]`` and move the bracket: stable -> ``lo``, unstable -> ``hi``."""
        lr = self.ladder[index]
        self.points += points
        self.probed.append(lr)
        best = max_stable_lr(self.points, maximize=self.maximize, tolerance=self.tolerance)
        if best is not None and best >= lr:
            self.lo = index
        else:
            self.hi = index

    def answer(self) -> float | None:
        """The max stable LR of every point probed; None when the anchor was unstable (no stable LR)."""
        if self.lo < 0:
            return None
        return max_stable_lr(self.points, maximize=self.maximize, tolerance=self.tolerance)


def lr_boundary(
    sweep: Sweep,
    uri: str,
    *,
    lr_key: str = "model.lr",
    lr_min: float | None = None,
    lr_max: float | None = None,
    lr_points: int | None = None,
    tolerance: float = 0.1,
    metric: str = "val/loss",
    maximize: bool = False,
    **run_kwargs,
) -> dict:
    """Run the bisection (see the module doc); ``run_kwargs`` go to ``run_sweep`` (launcher, workers, ...).

    Returns {"variants": {label: {"max_stable_lr", "probed": [lr...], "runs"}}, "runs": total probed runs,
    "grid_runs": what the full grid over the same ladder costs, "ladder": [...], "exit_code"}."""
    from normlight.sweep.local import run_sweep

    lrs = ladder(sweep, lr_key, lr_min, lr_max, lr_points)
    combos, seed_axis, seeds = variants(sweep, lr_key)
    state = {variant_label(v): (v, Bisection(lrs, tolerance, maximize)) for v in combos}
    c = sweep_runs.client(uri)
    exit_code, round_no = 0, 0
    while True:
        todo = {label: b.next_index() for label, (_, b) in state.items()}
        todo = {label: i for label, i in todo.items() if i is not None}
        if not todo:
            break
        round_no += 1
        batch = {
            label: probe_runs(sweep, state[label][0], lr_key, lrs[i], seed_axis, seeds) for label, i in todo.items()
        }
        print(f"[search] round {round_no}: " + "; ".join(f"{k} lr={lrs[i]:g}" for k, i in todo.items()), flush=True)
        code = run_sweep(sweep, uri, runs=[r for rs in batch.values() for r in rs], **run_kwargs)
        if code not in (0, 1):  # interrupted (130/143): stop; a re-run resumes from the store
            return {"exit_code": code}
        exit_code = max(exit_code, code)
        exp = c.get_experiment_by_name(sweep.experiment)
        finished = {
            r.data.tags.get(sweep_runs.HASH_TAG): r
            for r in sweep_runs.sweep_runs(c, exp.experiment_id, sweep.name)
            if r.info.status == "FINISHED"
        }
        for label, i in todo.items():
            state[label][1].record(i, _points(finished, batch[label], lrs[i], metric))
    out = {}
    for label, (_, b) in state.items():
        out[label] = {"max_stable_lr": b.answer(), "probed": sorted(b.probed), "runs": len(b.points)}
    total = sum(v["runs"] for v in out.values())
    return {
        "variants": out,
        "runs": total,
        "grid_runs": len(combos) * len(lrs) * len(seeds),
        "ladder": lrs,
        "exit_code": exit_code,
    }


def print_boundary(result: dict) -> None:
    """The per-variant answer and the run count against the full grid."""
    for label, v in result["variants"].items():
        lr = v["max_stable_lr"]
        shown = f"{lr:g}" if lr is not None else "none (unstable at the lowest LR: no stable LR in the ladder)"
        print(f"max stable LR  {label}: {shown}  ({v['runs']} runs, LRs {', '.join(f'{x:g}' for x in v['probed'])})")
    n, g = result["runs"], result["grid_runs"]
    print(
        f"[search] lr-boundary: {n} runs; the full grid over the same {len(result['ladder'])} LRs: {g} runs "
        f"({g - n} fewer, {100 * (g - n) / g:.0f}% saved)"
    )
