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
        grid={"model.placement": ["pre"], "model.lr": [1.0e-3, 3.0e-3, 1.0e30]},
        fixed={"data.init_args.block_size": 32, "data.init_args.batch_size": 4},
    )
    out = tmp_path / "res" / "lrb"
    code = bench.main(
        [
            "--sweep",
            str(path),
            "--workers",
            "1",
            "--tolerance",
            "0.5",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["grid_runs"] == 3 and result["search_runs"] == 2 and result["saved_runs"] == 1
    (row,) = result["variants"]
    assert row["search_max_stable_lr"] == 3e-3 and row["grid_max_stable_lr"] in (1e-3, 3e-3)
    assert code == (0 if row["same"] else 1)
    assert "2 runs** for the boundary search vs **3**" in out.with_suffix(".md").read_text()
