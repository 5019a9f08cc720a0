"""benchmarks/lr_boundary.py runs end to end on a reduced sweep and writes its results files (slow: real runs)."""

import json

import pytest

from tests.sweep.helpers import ROOT, reduced_sweep


@pytest.mark.slow
def test_lr_boundary_benchmark_writes_its_results(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = importlib.util.spec_from_file_location("lr_boundary", ROOT / "benchmarks" / "lr_boundary.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = reduced_sweep(
        ROOT / "configs" / "sweeps" / "placement_lr_quick.yaml",
        tmp_path,
        grid={"model.placement": ["pre"], "model.lr": [1.0e-3, 2.0e-3, 3.0e-3, 1.0e30, 1.0e31]},
        fixed={"data.init_args.block_size": 32, "data.init_args.batch_size": 4},
    )
    out = tmp_path / "res" / "lrb"
    args = ["--sweep", str(path), "--workers", "1", "--tolerance", "0.5", "--out", str(out)]
    # the second ladder [1e-3, 3.162e-3, 1e-2] shares its 1e-3 point with the first
    args += ["--lr-min", "1e-3", "--lr-max", "1e-2", "--lr-points", "3", "--workdir", str(tmp_path / "work")]
    code = bench.main(args)
    result = json.loads(out.with_suffix(".json").read_text())
    own, dense = result["ladders"]
    # the sweep's 5 LRs: 2e-3 and 1e30 (diverged), then 1e-3 and 3e-3; 1e31 is never trained
    assert own["grid_runs"] == 5 and own["search_runs"] == 4 and own["saved_runs"] == 1
    assert own["search_runs_reused"] == 0 and own["grid_runs_trained_after_search"] == 1
    (row,) = own["variants"]
    assert row["search_lrs"] == [1e-3, 2e-3, 3e-3, 1e30]
    assert row["search_max_stable_lr"] == 3e-3 and row["grid_max_stable_lr"] in (1e-3, 2e-3, 3e-3)
    # the dense ladder reuses the 1e-3 run of the first (same config hash) and counts it all the same
    assert dense["ladder"] == [1e-3, 3.162e-3, 1e-2] and dense["grid_runs"] == 3
    assert dense["search_runs_reused"] == 1 and dense["search_runs"] == 3  # 3 LRs: phase 1 trains all
    assert dense["search_runs"] + dense["grid_runs_trained_after_search"] == 3
    assert code == (0 if result["all_same"] else 1)
    md = out.with_suffix(".md").read_text()
    assert "**4 runs** for the boundary search vs **5**" in md and "the store already had them" in md
