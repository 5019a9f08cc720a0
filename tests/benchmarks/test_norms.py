"""benchmarks/norms.py: its code path at tiny size (the numbers themselves are not checked)."""

import importlib.util
import json

from tests.helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "norms.py"


def load():
    """The benchmark script as a module."""
    spec = importlib.util.spec_from_file_location("norms_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_quick_run_reports_every_entry_against_layernorm_and_copy(tmp_path):
    bench = load()
    bench.main(["--quick", "--no-cnn", "--norms", "rmsnorm", "dyt", "--modes", "eager", "fast", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "norms.json").read_text())
    rows = {(r["name"], r["mode"]): r for r in report["results"]}
    assert set(rows) == {("torch.nn.LayerNorm", "-"), ("copy", "-")} | {
        (n, m) for n in ("rmsnorm", "dyt") for m in ("eager", "fast")
    }
    assert rows[("torch.nn.LayerNorm", "-")]["x_ln_min"] == 1.0
    assert rows[("copy", "-")]["x_copy_min"] == 1.0
    # the fast paths save the input only (DyT) or the input and per-row statistics (RMSNorm); the
    # reference DyT keeps the input and tanh(alpha x): twice as much
    assert rows[("dyt", "eager")]["saved_mb"] > 1.5 * rows[("dyt", "fast")]["saved_mb"] > 0
    assert rows[("dyt", "fast")]["goal"] == 2.0 and rows[("rmsnorm", "fast")]["goal"] == 1.5
    assert rows[("dyt", "eager")]["goal"] is None
    md = (tmp_path / "norms.md").read_text()
    assert "load average" in md and "| dyt | fast |" in md


def test_profile_ranks_operators_by_cpu_time():
    import torch

    bench = load()
    x, dy = torch.randn(4, 16, 32), torch.randn(4, 16, 32)
    ops = bench.profile(torch.nn.LayerNorm(32), x, dy, runs=2)
    assert ops[-1]["op"] == "(rest)" and any("layer_norm" in o["op"] for o in ops)
    shares = [o["share"] for o in ops[:-1]]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 1.0 + 1e-6
