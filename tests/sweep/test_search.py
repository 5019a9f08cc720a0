"""`normlight sweep --search lr-boundary`: bisection over the LR ladder trains fewer points than the grid, judges them
with `normlight compare`'s rule, and its probes are the grid's own points (the grid afterwards reuses them)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.cli import sweep as sweep_cli
from normlight.sweep import search
from normlight.tracking import sweep_runs
from tests.sweep.helpers import ROOT, reduced_sweep

SWEEPS = ROOT / "configs" / "sweeps"
SMALL = {"data.init_args.block_size": 32, "data.init_args.batch_size": 4}


def test_ladder_and_variants(tmp_path):
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml",
        tmp_path,
        grid={"model.placement": ["pre", "post"], "model.lr": [3e-3, 1e-3, 1e-2], "seed_everything": [0, 1]},
    )
    s = sw.load_sweep(path)
    assert search.ladder(s, "model.lr") == [1e-3, 3e-3, 1e-2]
    assert search.ladder(s, "model.lr", 1e-4, 1e-2, 5) == [1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2]
    combos, seed_axis, seeds = search.variants(s, "model.lr")
    assert combos == [{"model.placement": "pre"}, {"model.placement": "post"}]
    assert seed_axis == "seed_everything" and seeds == [0, 1]
    # a probe is the full grid's own point: same hashes and names
    grid = {r.hash: r.name for r in sw.plan(s)}
    probes = search.probe_runs(s, combos[1], "model.lr", 3e-3, seed_axis, seeds)
    assert len(probes) == 2 and all(grid[r.hash] == r.name for r in probes)
    with pytest.raises(sw.SweepError, match="--lr-min < --lr-max"):
        search.ladder(s, "model.lr", 1e-2, 1e-3)


@pytest.mark.slow
def test_boundary_search_trains_fewer_points_than_the_grid(tmp_path, store, monkeypatch, capsys):
    """Ladder 1e-3 < 3e-3 < 1e30 (a certain divergence): bisection probes 3e-3 (stable) then 1e30 (diverged) and
    answers 3e-3 with 2 runs instead of 3; the 1e-3 point is never trained."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = reduced_sweep(
        SWEEPS / "placement_lr.yaml", tmp_path, grid={"model.lr": [1.0e-3, 3.0e-3, 1.0e30]}, fixed=SMALL, name="lrb"
    )
    s = sw.load_sweep(path)
    argv = ["sweep", str(path), "--tracking-uri", store, "--search", "lr-boundary", "--stable-tolerance", "0.5"]
    assert sweep_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "max stable LR  all: 0.003  (2 runs, LRs 0.003, 1e+30)" in out
    assert "2 runs; the full grid over the same 3 LRs: 3 runs (1 fewer, 33% saved)" in out
    c = MlflowClient(store)
    runs = sweep_runs.sweep_runs(c, c.get_experiment_by_name(s.experiment).experiment_id, s.name)
    low, mid, high = sw.plan(s)
    assert sorted(r.data.tags["sweep_hash"] for r in runs) == sorted([mid.hash, high.hash])
    assert {r.data.tags["sweep_hash"]: r.data.tags.get("diverged") for r in runs}[high.hash] == "true"
    # a second search trains nothing: every probe is already finished
    assert sweep_cli.main(argv) == 0
    assert "0 to run" in capsys.readouterr().out
    assert len(sweep_runs.sweep_runs(c, c.get_experiment_by_name(s.experiment).experiment_id, s.name)) == 2
