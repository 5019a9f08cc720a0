"""`normlight plugins list` with real fixture distributions on the path: built-ins, fixtures, broken, duplicates."""

import json
import os
import subprocess
import sys


def _cli(args, site):
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "320"}
    return subprocess.run([sys.executable, "-m", "normlight", *args], capture_output=True, text=True, env=env)


def test_cli_plugins_list_shows_builtins_fixtures_and_broken(fixture_site):
    out = _cli(["plugins", "list", "--kind", "norms", "--load", "--json"], fixture_site)
    assert out.returncode == 0, out.stderr
    rows = {(r["name"], r["distribution"]): r for r in json.loads(out.stdout)}
    assert rows[("rmsnorm", "normlight")]["status"] in ("ok", "broken")  # built-in, registered by entry point
    good = rows[("fixture_good", "normlight-fixture-plugins")]
    assert (good["status"], good["version"], good["description"]) == (
        "ok",
        "0.3.1",
        "fixture: mean-centring with a gain",
    )
    broken = rows[("fixture_broken", "normlight-fixture-plugins")]
    assert broken["status"] == "broken" and broken["error"].startswith("ModuleNotFoundError: No module named")
    assert broken["entry_point"] == "nl_fixture.broken:Anything"
    assert rows[("fixture_dup", "normlight-fixture-dup")]["duplicate_of"] == ["normlight-fixture-plugins:fixture_dup"]


def test_cli_lazy_list_does_not_import_and_table_renders(fixture_site):
    out = _cli(["plugins", "list"], fixture_site)
    assert out.returncode == 0, out.stderr
    assert "normlight-fixture-plugins 0.3.1" in out.stdout and "not loaded" in out.stdout
    assert "fixture_dup" in out.stdout and "select as normlight-fixture-dup:fixture_dup" in out.stdout


def test_cli_plugins_list_every_kind(fixture_site):
    out = _cli(["plugins", "list", "--load", "--json"], fixture_site)  # one process: every kind at once
    assert out.returncode == 0, out.stderr
    rows = [r for r in json.loads(out.stdout) if r["distribution"] == "normlight"]
    for kind, names in (
        ("pooling", {"cls", "mean", "ggem", "multi_layer_attn", "last_token"}),
        ("residual", {"add", "gate", "laurel", "dwa", "value_residual"}),
        ("mixer", {"attention", "pool", "identity"}),
        ("depth_regularizer", {"stochastic_depth", "drop_path", "layerskip"}),
    ):
        of_kind = {r["name"]: r for r in rows if r["kind"] == kind}
        assert names <= set(of_kind) and all(r["status"] == "ok" and r["paper"] for r in of_kind.values()), of_kind
    assert _cli(["plugins", "list", "--kind", "depth_regularizers"], fixture_site).returncode == 0


def test_table_fits_an_80_column_pipe_without_wrapped_names(fixture_site):
    env = {**os.environ, "PYTHONPATH": str(fixture_site), "COLUMNS": "80"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "normlight", *a], capture_output=True, text=True, env=env)  # noqa: E731
    names = {r["name"] for r in json.loads(run("plugins", "list", "--json").stdout)}
    out = run("plugins", "list", "--load")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    first_cells = {ln.split()[0] for ln in lines if ln.strip()}
    assert names <= first_cells, f"wrapped or cut: {sorted(names - first_cells)}"
