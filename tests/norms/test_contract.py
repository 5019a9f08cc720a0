"""The norm plugin contract, checked for EVERY built-in norm with the public conformance kit (normlight.testing).

One contract, one implementation: the checks a plugin author runs are the checks the built-ins pass.
The 2-rank sync check of the batch-statistic built-ins is tests/test_distributed.py (stricter: 4 steps,
masks, buffers); here: every other kit check, and the description + paper shown by
``normlight plugins list --load --json``.
"""

import json
import subprocess
import sys

import pytest

import normlight
from normlight import plugins
from normlight.testing import NORM_CHECKS, check_norm_plugin

BUILTINS = sorted(e.name for e in plugins.entries("norms") if e.dist == "normlight")
C = 64  # divisible by the default 32 groups of groupnorm / bcn / evonorm_s0


def test_every_entry_point_is_covered():
    assert {"layernorm", "rmsnorm", "dyt", "identity", "groupnorm", "grn", "layernorm_scaling", "batchnorm"} <= set(
        BUILTINS
    )


@pytest.mark.parametrize("check", [c for c in NORM_CHECKS if c != "distributed"])
@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_keeps_the_plugin_contract(name, check):
    check_norm_plugin(name, C, checks=[check])


@pytest.fixture(scope="module")
def cli_rows():
    out = subprocess.run(
        [sys.executable, "-m", "normlight", "plugins", "list", "--kind", "norms", "--load", "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return {r["name"]: r for r in json.loads(out) if r["distribution"] == "normlight"}


@pytest.mark.parametrize("name", BUILTINS)
def test_listed_with_description_and_paper(name, cli_rows):
    row = cli_rows[name]
    cls = normlight.registry.lookup("norms", name).load()
    assert row["status"] == "ok", row["error"]
    assert row["description"] and row["description"] == getattr(cls, "description", None)
    assert row["paper"] and any(ch.isdigit() for ch in row["paper"])  # "Author et al. YEAR, Title"
