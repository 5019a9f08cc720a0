"""benchmarks/scale.py: a clear "needs a GPU" exit on CPU, and its code path checked at tiny size."""

import importlib.util
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "scale.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the benchmark would run for real")
def test_needs_a_gpu_message_on_cpu(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--out", tmp_path], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "needs a GPU" in proc.stderr and "--check-on-cpu" in proc.stderr
    assert not list(tmp_path.iterdir()), "nothing may be written without a GPU"


def test_check_on_cpu_runs_every_column(capsys):
    spec = importlib.util.spec_from_file_location("scale_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--check-on-cpu", "--norms", "layernorm", "batchnorm"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| layernorm") or line.startswith("| batchnorm")]
    assert len(rows) == 2, out
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[1]) > 0 and cells[2] and cells[5].endswith("%") and cells[7].endswith("%"), line
