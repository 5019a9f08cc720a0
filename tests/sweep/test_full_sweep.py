"""The full CPU-sized placement sweep and its comparison (about 10 minutes on 2 cores; not run in CI)."""

import pytest
from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.cli import compare
from normlight.cli import sweep as sweep_cli
from normlight.tracking import sweep_runs
from tests.sweep.helpers import ROOT


@pytest.mark.slow
def test_placement_lr_quick_full_sweep_and_compare(tmp_path, store, capsys):
    path = ROOT / "configs" / "sweeps" / "placement_lr_quick.yaml"
    s = sw.load_sweep(path)
    assert sweep_cli.main(["sweep", str(path), "--tracking-uri", store, "--workers", "2"]) == 0
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(s.experiment)
    state = sweep_runs.state_by_hash(sweep_runs.sweep_runs(client, exp.experiment_id, s.name))
    assert {h for h, st in state.items() if st["state"] == "FINISHED"} == {r.hash for r in sw.plan(s)}
    out = tmp_path / "cmp"
    assert (
        compare.main(
            [
                "compare",
                "--experiment",
                s.experiment,
                "--tracking-uri",
                store,
                "--out",
                str(out),
                "--stable-tolerance",
                "0.05",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for placement in s.grid["model.placement"]:
        assert f"max stable LR  {placement}:" in printed
    assert len((out / "comparison.csv").read_text().splitlines()) == 1 + len(sw.plan(s))
