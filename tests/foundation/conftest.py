"""Real fixture distributions, installed into a temporary target directory for the registry tests.

They are installed with pip (real dist-info, real entry points) into a tmp dir rather than the
project venv, so the rest of the suite, which parametrizes over installed norms, never sees them.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from normlight import plugins

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="session")
def fixture_site(tmp_path_factory) -> Path:
    """A directory holding the installed fixture distributions (add it to sys.path or PYTHONPATH)."""
    target = tmp_path_factory.mktemp("fixture_site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
           "--target", str(target), str(FIXTURES / "normlight-fixture-plugins"), str(FIXTURES / "normlight-fixture-dup")]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return target


@pytest.fixture
def with_fixture_plugins(fixture_site, monkeypatch):
    """Make the fixture distributions visible to this interpreter for one test."""
    monkeypatch.syspath_prepend(str(fixture_site))
    plugins.refresh()
    yield fixture_site
    monkeypatch.undo()
    plugins.refresh()
    for mod in [m for m in sys.modules if m.startswith("nl_fixture")]:
        del sys.modules[mod]
