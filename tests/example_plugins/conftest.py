"""The example plugin package and a freshly scaffolded one, really installed (pip) into a temporary target.

Not into the project venv: the rest of the suite parametrizes over installed norms and must not see them.
Sources are copied first so pip's build leftovers never land in the work tree.
"""

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from normlight import plugins

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "plugins" / "normlight-extra-norms"
SCAFFOLD_NAME, SCAFFOLD_NORM = "normlight-scaffold-check", "scaffold_check"
# one scaffolded package per other kind: (kind, distribution, plugin name)
KIND_SCAFFOLDS = [(k, f"normlight-scaffold-{k}", f"scaffold_{k}") for k in ("pooling", "residual", "mixer")]


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> SimpleNamespace:
    """Install both packages with pip into one target dir; return the dir and the two source trees."""
    from normlight.cli import main

    src = tmp_path_factory.mktemp("plugin_src")
    example = Path(
        shutil.copytree(
            EXAMPLE,
            src / EXAMPLE.name,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"),
        )
    )
    assert main(["plugins", "new", SCAFFOLD_NAME, "--dir", str(src)]) == 0  # the real CLI path
    scaffolded = src / SCAFFOLD_NAME
    for kind, dist, name in KIND_SCAFFOLDS:
        assert main(["plugins", "new", dist, "--kind", kind, "--plugin", name, "--dir", str(src)]) == 0
    target = tmp_path_factory.mktemp("plugin_site")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        str(target),
        str(example),
        str(scaffolded),
        *(str(src / dist) for _, dist, _ in KIND_SCAFFOLDS),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return SimpleNamespace(
        target=target,
        example=example,
        scaffolded=scaffolded,
        scaffold_name=SCAFFOLD_NAME,
        scaffold_norm=SCAFFOLD_NORM,
        kind_scaffolds={kind: (src / dist, name) for kind, dist, name in KIND_SCAFFOLDS},
    )


@pytest.fixture
def with_plugin_site(plugin_site, monkeypatch):
    """Make the installed plugin packages visible to this interpreter for one test."""
    monkeypatch.syspath_prepend(str(plugin_site.target))
    plugins.refresh()
    yield plugin_site
    monkeypatch.undo()
    plugins.refresh()
    for mod in [m for m in sys.modules if m.startswith(("normlight_extra_norms", "normlight_scaffold"))]:
        del sys.modules[mod]
