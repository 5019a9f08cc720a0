"""``normlight sweep FILE --search lr-boundary``: the largest stable learning rate per variant, adaptively.

A variant is one combination of the grid's other axes (norm x placement x depth ...); its seeds are the values
of a seed axis (``seed_everything``), all trained at every LR the search probes. The LRs are a ladder, log-spaced
from ``lr_min`` to ``lr_max`` (by default the grid's own LR values, so the search and the grid probe the same
LRs).

The rule. "Stable" is exactly what ``normlight compare`` calls stable (``tracking.compare.max_stable_lr``,
reused, not copied): no seed diverged (or failed to finish) and the mean final metric is within ``tolerance`` of
the BEST LR's. The answer therefore depends on the best loss as much as on the divergence boundary, so the
search (:class:`BoundarySearch`) has two phases over ladder indices, a diverged or unfinished LR counting as
the worst loss::

    1. the best LR: ternary search, assuming the loss is unimodal in the LR (falls, then rises)
         lo, hi = 0, n - 1
         while hi - lo > 2:  m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3   (train both)
             loss(m1) < loss(m2)?  hi = m2 - 1  :  loss(m1) > loss(m2)?  lo = m1 + 1  :  (lo, hi) = (m1, m2)
             (both unstable: hi = m1 - 1)
         train what is left of [lo, hi]; best = the lowest loss trained
    2. the boundary above it: bisection, assuming the tolerance verdict is monotone above the best LR
         a = best (within tolerance), b = the lowest probed LR above it that fails the tolerance (or n)
         while b - a > 1:  mid = (a + b) // 2  (train)  ->  within tolerance?  a = mid  :  b = mid

The answer is ``max_stable_lr`` of every point probed. It is the grid's answer whenever the two assumptions hold
(the grid's best LR is then among the probes, and so is the boundary). A ladder of n LRs costs about
2 log_3(n) + log_2(n) probes at most, fewer when phase 1 already brackets the boundary: 4 of 4 LRs, 5-7 of 9
(``benchmarks/lr_boundary.py`` measures it against the full grid and reports where the answers differ).

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
from normlight.tracking.compare import max_stable_lr, stability_point, within_tolerance

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
class BoundarySearch:
    """One variant's two-phase search over ``ladder`` (pure decision logic: no training, no store).

    :meth:`next_index` is the ladder index to train next (None: done), :meth:`record` takes that probe's
    (lr, diverged, final metric) points, one per seed, and :meth:`answer` is the max stable LR. The next index
    is recomputed from the losses recorded so far, so the same probes always lead to the same next one."""

    ladder: list[float]
    tolerance: float = 0.1
    maximize: bool = False
    points: list = dataclasses.field(default_factory=list)
    probed: list[float] = dataclasses.field(default_factory=list)
    losses: dict = dataclasses.field(default_factory=dict)  # ladder index -> mean loss (inf: unstable)

    def next_index(self) -> int | None:
        """Phase 1 (the best LR) until its bracket is trained, then phase 2 (the boundary above it)."""
        lo, hi = 0, len(self.ladder) - 1
        while hi - lo > 2:
            m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3
            for m in (m1, m2):
                if m not in self.losses:
                    return m
            if self.losses[m1] < self.losses[m2]:
                hi = m2 - 1
            elif self.losses[m1] > self.losses[m2]:
                lo = m1 + 1
            elif math.isinf(self.losses[m1]):  # both unstable: the best is below (instability grows with the LR)
                hi = m1 - 1
            else:  # an exact tie: a unimodal loss has its minimum between the two
                lo, hi = m1, m2
        for m in range(lo, hi + 1):
            if m not in self.losses:
                return m
        best = min(self.losses, key=lambda i: (self.losses[i], i))
        if math.isinf(self.losses[best]):
            return None  # every probe unstable: no stable LR to bound
        fails = [i for i in self.losses if i > best and not self._within(i, best)]
        b = min(fails, default=len(self.ladder))
        a = max(i for i in self.losses if best <= i < b)
        return (a + b) // 2 if b - a > 1 else None

    def _within(self, i: int, best: int) -> bool:
        # the losses are signed so that lower is better: compare's rule in its minimizing form
        return within_tolerance(self.losses[i], self.losses[best], self.tolerance)

    def record(self, index: int, points: list[tuple[float, bool, float | None]]) -> None:
        """Add the probe at ``ladder[index]`` (one point per seed) with its mean loss, +inf when unstable."""
        self.points += points
        self.probed.append(self.ladder[index])
        values = [v for _, div, v in points if not div and v is not None and math.isfinite(v)]
        if len(values) < len(points) or not values:
            self.losses[index] = math.inf
        else:
            mean = sum(values) / len(values)
            self.losses[index] = -mean if self.maximize else mean

    def answer(self) -> float | None:
        """The max stable LR of every point probed (``normlight compare``'s rule); None when none is stable."""
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
    """Run the search (see the module doc); ``run_kwargs`` go to ``run_sweep`` (launcher, workers, ...).

    Returns {"variants": {label: {"max_stable_lr", "probed": [lr...], "runs"}}, "runs": total probed runs,
    "grid_runs": what the full grid over the same ladder costs, "ladder": [...], "exit_code"}."""
    from normlight.sweep.local import run_sweep

    lrs = ladder(sweep, lr_key, lr_min, lr_max, lr_points)
    combos, seed_axis, seeds = variants(sweep, lr_key)
    state = {variant_label(v): (v, BoundarySearch(lrs, tolerance, maximize)) for v in combos}
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
        shown = f"{lr:g}" if lr is not None else "none (no stable LR in the ladder)"
        print(f"max stable LR  {label}: {shown}  ({v['runs']} runs, LRs {', '.join(f'{x:g}' for x in v['probed'])})")
    n, g = result["runs"], result["grid_runs"]
    print(
        f"[search] lr-boundary: {n} runs; the full grid over the same {len(result['ladder'])} LRs: {g} runs "
        f"({g - n} fewer, {100 * (g - n) / g:.0f}% saved)"
    )
