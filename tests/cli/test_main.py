"""The `normlight` console script: help, version, plugin listing (run as the installed script)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import normlight

SCRIPT = shutil.which("normlight") or str(Path(sys.executable).parent / "normlight")


def run(*args):
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    )


def test_help_lists_every_subcommand():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("fit", "validate", "test", "sweep", "compare", "ui", "server", "plugins", "quickstart"):
        assert cmd in out.stdout


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"normlight {normlight.__version__}"


def test_plugins_list_json_by_kind_without_import():
    out = run("plugins", "list", "--kind", "placements", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["kind"] for r in rows} == {"placement"}
    pre = next(r for r in rows if r["name"] == "pre")
    assert (pre["distribution"], pre["status"]) == ("normlight", "not loaded")


def test_bad_subcommand_exits_nonzero_with_usage():
    out = run("plugins", "frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_python_dash_m_normlight():
    out = subprocess.run([sys.executable, "-m", "normlight", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"normlight {normlight.__version__}"
