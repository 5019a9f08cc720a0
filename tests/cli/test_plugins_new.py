"""`normlight plugins new`: what it writes and how it refuses bad input (installing and testing it: test_packages.py)."""

import pytest
import tomllib

from normlight.cli import main
from normlight.cli.plugins import scaffold


def test_scaffold_writes_a_package_with_an_entry_point_a_norm_and_kit_tests(tmp_path):
    root = scaffold("normlight-centered-rms", tmp_path)
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "normlight-centered-rms"
    assert meta["project"]["entry-points"]["normlight.norms"] == {
        "centered_rms": "normlight_centered_rms.norms:CenteredRms"
    }
    assert any(d.startswith("normlight>=") for d in meta["project"]["dependencies"])
    assert "class CenteredRms(nn.Module)" in (root / "normlight_centered_rms" / "norms.py").read_text()
    test = (root / "tests" / "test_centered_rms.py").read_text()
    assert "class TestConformance(NormPluginConformance)" in test and 'norm = "centered_rms"' in test
    assert (root / "README.md").exists() and (root / "normlight_centered_rms" / "__init__.py").exists()
    compile((root / "normlight_centered_rms" / "norms.py").read_text(), "norms.py", "exec")
    compile(test, "test.py", "exec")


def test_norm_name_option(tmp_path):
    root = scaffold("acme-norms", tmp_path, norm="acme_scaled")
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["normlight.norms"] == {"acme_scaled": "acme_norms.norms:AcmeScaled"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["9-starts-with-a-digit"], "is not a valid distribution name"),
        (["my-rms", "--norm", "rmsnorm"], "a norm named 'rmsnorm' is already registered"),
        (["my-rms", "--norm", "class"], "pass --norm with a lower_case identifier"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(tmp_path, capsys, argv, message):
    assert main(["plugins", "new", *argv, "--dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_refuses_to_overwrite_a_non_empty_directory(tmp_path, capsys):
    (tmp_path / "my-norm").mkdir()
    (tmp_path / "my-norm" / "keep.txt").write_text("mine")
    assert main(["plugins", "new", "my-norm", "--dir", str(tmp_path)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "my-norm" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "kind, group, module, base",
    [
        ("pooling", "normlight.poolings", "poolings", "PoolingPluginConformance"),
        ("residual", "normlight.residuals", "residuals", "ResidualPluginConformance"),
        ("mixer", "normlight.mixers", "mixers", "MixerPluginConformance"),
    ],
)
def test_scaffold_other_kinds(tmp_path, capsys, kind, group, module, base):
    assert main(["plugins", "new", "acme-things", "--kind", kind, "--plugin", "acme", "--dir", str(tmp_path)]) == 0
    assert f"normlight plugins list --kind {module} --load" in capsys.readouterr().out
    root = tmp_path / "acme-things"
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"][group] == {"acme": f"acme_things.{module}:Acme"}
    source = (root / "acme_things" / f"{module}.py").read_text()
    test = (root / "tests" / "test_acme.py").read_text()
    assert "class Acme(nn.Module)" in source and f"class TestConformance({base})" in test
    compile(source, "plugin.py", "exec")
    compile(test, "test.py", "exec")


def test_scaffold_refuses_a_taken_name_of_the_same_kind(tmp_path, capsys):
    assert main(["plugins", "new", "my-pool", "--kind", "pooling", "--plugin", "gem", "--dir", str(tmp_path)]) == 2
    assert "a pooling named 'gem' is already registered" in capsys.readouterr().err
