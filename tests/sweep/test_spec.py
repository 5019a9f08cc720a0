"""Sweep files: schema validation, hashing, dry-run commands and the skip/retry rules (no training)."""

import shlex
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from normlight import sweep as sw
from normlight.cli import sweep as sweep_cli
from normlight.tracking import sweep_runs
from tests.sweep.helpers import SHIPPED


def write(tmp_path, text: str, base_text: str = "trainer:\n  max_steps: 1\n") -> Path:
    (tmp_path / "base.yaml").write_text(base_text)
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


GOOD = """
experiment: exp
base: base.yaml
grid:
  model.norm: [layernorm, rmsnorm]
  model.lr: [1.0e-3, 1.0e-2]
  seed_everything: [0, 1]
fixed:
  trainer.max_steps: 5
"""


def test_grid_is_cartesian_with_stable_unique_hashes(tmp_path):
    s = sw.load_sweep(write(tmp_path, GOOD))
    runs = sw.plan(s)
    assert len(runs) == 8 and len({r.hash for r in runs}) == 8
    assert runs[0].overrides == {
        "trainer.max_steps": 5,
        "model.norm": "layernorm",
        "model.lr": 1e-3,
        "seed_everything": 0,
    }
    assert [r.hash for r in sw.plan(sw.load_sweep(tmp_path / "s.yaml"))] == [r.hash for r in runs]  # deterministic
    # identity depends on the base config text and on every override, not on key order
    assert sw.config_hash("a", {"x": 1, "y": 2}) == sw.config_hash("a", {"y": 2, "x": 1})
    assert sw.config_hash("a", {"x": 1}) != sw.config_hash("b", {"x": 1}) != sw.config_hash("a", {"x": 2})
    assert runs[0].tags["sweep"] == "s" and runs[0].tags["cfg.model.norm"] == "layernorm"
    assert runs[0].tags["sweep_axes"] == "model.norm,model.lr"
    assert runs[0].name == "s/layernorm/lr=0.001/s0"


@pytest.mark.parametrize(
    "text, match",
    [
        ("experiment: e\nbase: base.yaml\n", "missing required key 'grid'"),
        ("experiment: e\nbase: base.yaml\ngrid: {model.norm: []}\n", "non-empty list"),
        ("experiment: e\nbase: nope.yaml\ngrid: {model.norm: [a]}\n", "base config 'nope.yaml' not found"),
        ("experiment: e\nbase: base.yaml\ngrid: {norm: [a]}\n", "must start with one of"),
        (
            "experiment: e\nbase: base.yaml\ngrid: {model.norm: [a]}\nfixed: {model.norm: b}\n",
            "both in 'grid' and in 'fixed'",
        ),
        ("experiment: e\nbase: base.yaml\ngrid: {model.norm: [a, a]}\n", "repeats a value"),
        ("experiment: e\nbase: base.yaml\ngrid: {model.norm: [a]}\nworkers: 2\n", "unknown key"),
        (
            "experiment: e\nbase: base.yaml\ngrid: {model.norm: [a]}\nfixed: {trainer.logger.init_args.run_id: x}\n",
            "set by the sweep",
        ),
        ("experiment: e\nbase: base.yaml\ngrid: {setup: [{model.norm: a}, b]}\n", "mixes mappings"),
    ],
)
def test_bad_sweep_files_name_the_problem(tmp_path, text, match):
    with pytest.raises(sw.SweepError, match=match):
        sw.plan(sw.load_sweep(write(tmp_path, text)))


def test_bundle_axis_sets_keys_together(tmp_path):
    s = sw.load_sweep(
        write(
            tmp_path,
            """
experiment: e
base: base.yaml
grid:
  setup:
    - {label: gn+ws, model.norm: groupnorm, model.model_kwargs: {weight_standardization: true}}
    - {label: nf, model.norm: null, model.model_kwargs: {variant: nf}}
  data.init_args.batch_size: [2, 8]
""",
        )
    )
    runs = sw.plan(s)
    assert len(runs) == 4
    nf = runs[2]
    assert nf.overrides == {"model.norm": None, "model.model_kwargs": {"variant": "nf"}, "data.init_args.batch_size": 2}
    assert nf.tags["setup"] == "nf" and nf.name == "s/nf/batch_size=2"
    args = nf.args(s, "sqlite:///x.db")
    assert args[args.index("--model.norm") + 1] == "null"
    assert args[args.index("--model.model_kwargs") + 1] == '{"variant":"nf"}'


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweeps_validate_and_dry_run(path, store, capsys):
    s = sw.load_sweep(path)
    runs = sw.plan(s)
    raw = yaml.safe_load(path.read_text())
    expected = 1
    for values in raw["grid"].values():
        expected *= len(values)
    assert len(runs) == expected and len({r.hash for r in runs}) == expected
    assert sweep_cli.main(["sweep", str(path), "--dry-run", "--tracking-uri", store]) == 0
    cmds = [shlex.split(line) for line in capsys.readouterr().out.splitlines() if line.startswith("normlight fit")]
    assert len(cmds) == expected
    for cmd, run in zip(cmds, runs):
        assert cmd[:3] == ["normlight", "fit", "--config"] and Path(cmd[3]).resolve() == s.base
        assert f'"sweep_hash":"{run.hash}"' in cmd[cmd.index("--trainer.logger.init_args.tags") + 1]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_sweep_overrides_parse_in_lightning_cli(path, tmp_path):
    """Every value of every axis is accepted by `normlight fit` (LightningCLI --print_config, no training)."""
    import contextlib
    import io

    from normlight.cli import train

    s = sw.load_sweep(path)
    runs = sw.plan(s)
    axes = list(s.grid)
    # a few runs that together use every value of every axis
    chosen = {}
    for r in runs:
        for a in axes:
            key = (a, str(r.labels[a]))
            chosen.setdefault(key, r)
    for r in {id(r): r for r in chosen.values()}.values():
        argv = r.args(s, f"sqlite:///{tmp_path / 'x.db'}")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            train.main([*argv, "--print_config"])
        assert exit_info.value.code in (0, None), out.getvalue()
        cfg = yaml.safe_load(out.getvalue())
        for key, value in r.overrides.items():
            node = cfg
            for part in key.split("."):
                node = node["init_args"][part] if part not in node and "init_args" in node else node[part]
            if isinstance(value, dict):  # a dict override merges with keys set below it (model.model_kwargs.pool)
                assert value.items() <= node.items(), (key, node, value)
            else:
                assert node == value, (key, node, value)


def test_finished_skipped_failed_held_until_retry(tmp_path, store, capsys):
    path = write(tmp_path, GOOD)
    s = sw.load_sweep(path)
    runs = sw.plan(s)
    c = sweep_runs.client(store)
    exp = sweep_runs.ensure_experiment(c, "exp", store)
    assert sweep_runs.ensure_experiment(c, "exp", store) == exp  # idempotent
    done = sweep_runs.create_run(c, exp, runs[0].name, runs[0].tags)
    c.set_terminated(done, "FINISHED")
    failed = sweep_runs.create_run(c, exp, runs[1].name, runs[1].tags)
    c.set_terminated(failed, "FAILED")
    sweep_runs.create_run(c, exp, runs[2].name, runs[2].tags)  # left RUNNING: a killed sweep

    def pending(*extra):
        assert sweep_cli.main(["sweep", str(path), "--dry-run", "--tracking-uri", store, *extra]) == 0
        out = capsys.readouterr().out
        return {h for h in (r.hash for r in runs) if f'"sweep_hash":"{h}"' in out}

    all_h = {r.hash for r in runs}
    assert pending() == all_h - {runs[0].hash, runs[1].hash}
    assert pending("--retry-failed") == all_h - {runs[0].hash}
    state = sweep_runs.state_by_hash(sweep_runs.sweep_runs(c, exp, "s"))
    assert state[runs[0].hash]["state"] == "FINISHED" and state[runs[1].hash]["state"] == "FAILED"
    assert state[runs[2].hash]["state"] == "INTERRUPTED"
    assert MlflowClient(store).get_experiment_by_name("exp").artifact_location == "mlflow-artifacts:/"  # store-relative


def test_a_point_that_failed_then_finished_counts_as_finished(tmp_path, store, capsys):
    """Several runs of one config hash: FINISHED beats FAILED beats INTERRUPTED, in whatever order they ran."""
    path = write(tmp_path, GOOD)
    runs = sw.plan(sweep := sw.load_sweep(path))
    c = sweep_runs.client(store)
    exp = sweep_runs.ensure_experiment(c, "exp", store)
    ids = {}
    for status in ("FAILED", "FINISHED"):  # failed once, then finished on a --retry-failed
        ids[0, status] = sweep_runs.create_run(c, exp, runs[0].name, runs[0].tags)
        c.set_terminated(ids[0, status], status)
    for status in ("FINISHED", "FAILED"):  # the same two records in the other order
        c.set_terminated(sweep_runs.create_run(c, exp, runs[1].name, runs[1].tags), status)
    killed = sweep_runs.create_run(c, exp, runs[2].name, runs[2].tags)  # a killed attempt (left RUNNING)
    c.set_terminated(sweep_runs.create_run(c, exp, runs[2].name, runs[2].tags), "FAILED")
    sweep_runs.create_run(c, exp, "stray", {"sweep": sweep.name})  # a run of the sweep without a hash: ignored
    state = sweep_runs.state_by_hash(sweep_runs.sweep_runs(c, exp, sweep.name))
    assert set(state) == {runs[0].hash, runs[1].hash, runs[2].hash}
    assert state[runs[0].hash]["state"] == state[runs[1].hash]["state"] == "FINISHED"
    assert state[runs[0].hash]["finished"] == [ids[0, "FINISHED"]] and state[runs[0].hash]["failed"] == [
        ids[0, "FAILED"]
    ]
    assert state[runs[2].hash]["state"] == "FAILED" and state[runs[2].hash]["interrupted"] == [(killed, "RUNNING")]

    def pending(*extra):
        assert sweep_cli.main(["sweep", str(path), "--dry-run", "--tracking-uri", store, *extra]) == 0
        out = capsys.readouterr().out
        return {h for h in (r.hash for r in runs) if f'"sweep_hash":"{h}"' in out}

    all_h = {r.hash for r in runs}
    assert pending() == all_h - {runs[0].hash, runs[1].hash, runs[2].hash}
    assert pending("--retry-failed") == all_h - {runs[0].hash, runs[1].hash}


def test_dry_run_creates_nothing(tmp_path, monkeypatch, store, capsys):
    """Neither a store, its folder, an experiment nor a log folder: only the commands are printed."""
    from mlflow import MlflowClient

    path = SHIPPED[0]
    fresh = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert sweep_cli.main(["sweep", str(path), "--dry-run", "--tracking-uri", fresh]) == 0
    assert "normlight fit" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no new/ folder, no runs/
    assert sweep_cli.main(["sweep", str(path), "--dry-run", "--tracking-uri", store]) == 0
    assert [e.name for e in MlflowClient(store).search_experiments()] == ["Default"]
