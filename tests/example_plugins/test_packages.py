"""Third-party plugin packages end to end: install, own tests, discovery, listing, training and MLflow provenance."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import normlight

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = shutil.which("normlight") or str(Path(sys.executable).parent / "normlight")
EXTRA = {"biasnorm": "norm", "l1norm": "norm", "l1batchnorm": "norm", "parallel": "placement", "lse": "pooling"}


def _env(site, **extra):
    return {**os.environ, "PYTHONPATH": str(site.target), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.distributed  # the example package's own suite runs the kit's 2-rank gloo check
def test_example_and_scaffolded_packages_pass_their_own_tests_unchanged(plugin_site):
    # both suites at once (2 cores); each runs from its own directory with only the install on PYTHONPATH
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"]
    procs = {
        pkg: subprocess.Popen(
            cmd, cwd=pkg, env=_env(plugin_site), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for pkg in (plugin_site.example, plugin_site.scaffolded, *(d for d, _ in plugin_site.kind_scaffolds.values()))
    }
    outs = {pkg: p.communicate(timeout=600)[0] for pkg, p in procs.items()}
    for pkg, p in procs.items():
        assert p.returncode == 0, outs[pkg][-3000:]
    ex, sc = outs[plugin_site.example], outs[plugin_site.scaffolded]
    # the kit really ran: numpy references, every conformance check, the 2-rank sync and the placement checks
    for test in (
        "test_biasnorm_matches_numpy",
        "TestL1BatchNormConformance::test_distributed PASSED",
        "TestBiasNormConformance::test_dtypes PASSED",
        "TestParallelBlockConformance::test_gpt PASSED",
        "TestLSEPoolConformance::test_model PASSED",
        "test_study.py::test_verdict_every_outcome[ln1-bn1-not reproduced] PASSED",
    ):
        assert test in ex, ex[-3000:]
    for kind, (pkg, name) in plugin_site.kind_scaffolds.items():  # every scaffolded kind passes its own tests
        assert f"test_{name}_matches_numpy PASSED" in outs[pkg] and "TestConformance::test_model PASSED" in outs[pkg]
    for test in (
        f"test_{plugin_site.scaffold_norm}_matches_numpy PASSED",
        "TestConformance::test_channels_first PASSED",
    ):
        assert test in sc, sc[-3000:]


def test_plugins_list_json_shows_distributions_and_versions(plugin_site):
    out = subprocess.run(
        [SCRIPT, "plugins", "list", "--json", "--load"], capture_output=True, text=True, env=_env(plugin_site)
    )
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    for name, kind in EXTRA.items():
        r = rows[name]
        assert (r["kind"], r["distribution"], r["version"], r["status"]) == (
            kind,
            "normlight-extra-norms",
            "0.3.0",
            "ok",
        )
        assert r["description"], r
    assert rows["biasnorm"]["paper"].startswith("Yao et al. 2023")
    r = rows[plugin_site.scaffold_norm]
    assert (r["distribution"], r["version"], r["status"]) == (plugin_site.scaffold_name, "0.1.0", "ok")


def test_installed_plugins_are_discovered_and_build_in_every_family(with_plugin_site):
    assert {"biasnorm", "l1norm", "l1batchnorm", with_plugin_site.scaffold_norm} <= set(normlight.list_norms())
    assert "parallel" in normlight.list_placements()
    entry = normlight.registry.lookup("norms", "normlight-extra-norms:l1batchnorm")  # distribution:name
    assert (entry.dist, entry.version) == ("normlight-extra-norms", "0.3.0")
    assert "lse" in normlight.list_poolings()
    lse_vit = normlight.create_model(
        "vit-tiny", pool="lse", residual="gate", placement="parallel", depth=1, dim=32, num_heads=2
    )
    assert lse_vit(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    gpt = normlight.create_model("gpt-nano", norm="biasnorm", placement="parallel", depth=1)
    vit = normlight.create_model("vit-tiny", norm="l1norm", placement="parallel", depth=1, dim=32, num_heads=2)
    resnet = normlight.create_model("resnet20", norm="l1batchnorm")
    assert gpt(torch.randint(0, gpt.vocab_size, (2, 8))).shape == (2, 8, gpt.vocab_size)
    assert vit(torch.randn(2, vit.in_chans, vit.img_size, vit.img_size)).shape == (2, vit.num_classes)
    assert resnet(torch.randn(2, resnet.in_chans, resnet.img_size, resnet.img_size)).shape == (2, resnet.num_classes)
    assert type(gpt.blocks[0]).__name__ == "ParallelBlock"
    assert sum(type(m).__name__ == "L1BatchNorm" for m in resnet.modules()) > 10


# one process trains all three families (imports once); each run is 2 steps + 1 val batch
FAMILY_RUNS = {
    "gpt": ("configs/gpt/nano.yaml", "normlight-extra-norms:biasnorm", "parallel"),  # distribution:name works too
    "vit": ("configs/vit/tiny.yaml", "l1norm", "parallel"),
    "resnet": ("configs/resnet/resnet20.yaml", "l1batchnorm", None),
}
DRIVER = """
import json, sys
from normlight.cli import main
for argv in json.loads(sys.argv[1]):
    rc = main(argv)
    if rc:
        sys.exit(f"normlight {' '.join(argv)} exited with {rc}")
"""


def test_fit_from_yaml_records_plugin_provenance_in_mlflow(plugin_site, tmp_path):
    runs = FAMILY_RUNS
    argvs = []
    for family, (config, norm, placement) in runs.items():
        argv = [
            "fit",
            "--config",
            str(ROOT / config),
            "--model.norm",
            norm,
            "--trainer.max_steps",
            "2",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.val_check_interval",
            "1.0",
            "--trainer.default_root_dir",
            str(tmp_path / "runs"),
        ]
        argv += ["--model.model_kwargs.pool", "lse"] if family == "vit" else []  # a pooling plugin from the package
        argvs.append(argv + (["--model.placement", placement] if placement else []))
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(argvs)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(plugin_site, MLFLOW_TRACKING_URI=db),
        timeout=600,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]

    import mlflow

    client = mlflow.MlflowClient(db)
    found = {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            found[run.data.tags.get("family")] = run
    for family, (_, norm, placement) in runs.items():
        run = found[family]
        tags = run.data.tags
        assert (tags["norm"], tags["norm_dist"], tags["norm_version"]) == (norm, "normlight-extra-norms", "0.3.0"), tags
        if placement:
            assert (tags["placement_dist"], tags["placement_version"]) == ("normlight-extra-norms", "0.3.0"), tags
        if family == "vit":
            assert (tags["pool"], tags["pool_dist"], tags["pool_version"]) == ("lse", "normlight-extra-norms", "0.3.0")
        assert run.info.status == "FINISHED" and "val/loss" in run.data.metrics


def test_example_package_ships_a_study_that_runs_end_to_end(plugin_site, tmp_path):
    """The package's study is listed and runs at smoke scale (a real training run) into a temporary store."""
    env = _env(plugin_site)
    out = subprocess.run([SCRIPT, "study", "list"], capture_output=True, text=True, env={**env, "COLUMNS": "200"})
    assert out.returncode == 0 and "biasnorm_vs_layernorm" in out.stdout, out.stdout + out.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [SCRIPT, "study", "run", "biasnorm_vs_layernorm", "--scale", "smoke", "--tracking-uri", uri, "--out", "docs"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads((tmp_path / "docs" / "biasnorm_vs_layernorm" / "smoke" / "result.json").read_text())
    assert result["runs"]["finished"] == 1 and result["outcome"] == "inconclusive"  # one smoke run decides nothing
    assert "BiasNorm" in (tmp_path / "docs" / "biasnorm_vs_layernorm" / "smoke" / "report.md").read_text()
