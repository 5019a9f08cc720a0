"""`normlight compare`: maximum stable LR, field lookup, grouping (never across families), CSV, plots.

The grouping tests log real runs into a real sqlite MLflow store (no training: the metrics are chosen so
every expected number is known)."""

import csv
import math
import statistics
from types import SimpleNamespace

import pytest

from normlight.tracking import compare


def test_max_stable_lr_rules():
    nan = float("nan")
    pts = [
        (1e-3, False, 2.0),
        (1e-3, False, 2.2),
        (1e-2, False, 2.05),
        (1e-2, False, 2.05),
        (3e-2, False, 2.5),
        (1e-1, True, nan),
    ]
    assert compare.max_stable_lr(pts) == 1e-2  # 3e-2 is 19% worse than the best mean (2.05 at 1e-2)
    assert compare.max_stable_lr(pts, tolerance=0.3) == 3e-2
    pts.append((3e-2, True, nan))  # one diverged seed makes an LR unstable whatever the others did
    assert compare.max_stable_lr(pts, tolerance=0.3) == 1e-2
    acc = [(0.01, False, 0.9), (0.1, False, 0.85), (1.0, False, 0.5)]
    assert compare.max_stable_lr(acc, maximize=True) == 0.1
    assert compare.max_stable_lr([(0.1, True, nan)]) is None


def test_field_value_lookup_order():
    run = SimpleNamespace(
        data=SimpleNamespace(
            tags={"norm": "rmsnorm", "cfg.model.lr": "0.01", "norm_setup": "gn+ws"},
            params={"model.lr": "0.003", "data.batch_size": "8", "seed_everything": "1"},
        )
    )
    assert compare.field_value(run, "norm") == "rmsnorm"  # a tag
    assert compare.field_value(run, "seed_everything") == "1"  # a param
    assert compare.field_value(run, "lr") == "0.003"  # dotted param beats the cfg. tag
    assert compare.field_value(run, "batch_size") == "8"
    assert compare.field_value(run, "norm_setup") == "gn+ws"
    assert compare.field_value(run, "missing") is None


# ---------------------------------------------------------------- summarize: mean, std and diverged runs


@pytest.fixture(scope="module")
def seeded_runs():
    """FINISHED MLflow runs (real ``mlflow.entities.Run`` records, as ``load_runs`` returns them): layernorm with
    val/loss 1, 2, 3 over three seeds; rmsnorm with one finished seed (5.0) and one seed that diverged but
    still logged a finite last val/loss (0.5)."""
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

    rows = [("layernorm", 1, 1.0, "false"), ("layernorm", 2, 2.0, "false"), ("layernorm", 3, 3.0, "false")]
    rows += [("rmsnorm", 1, 5.0, "false"), ("rmsnorm", 2, 0.5, "true")]
    runs = []
    for i, (norm, seed, loss, diverged) in enumerate(rows):
        info = RunInfo(f"run{i}", "1", "", "FINISHED", 0, 1, "active", run_name=f"{norm}-{seed}")
        data = RunData(
            metrics=[Metric("val/loss", loss, 1, 10)],
            params=[Param("seed_everything", str(seed))],
            tags=[RunTag("norm", norm), RunTag("diverged", diverged)],
        )
        runs.append(Run(info, data))
    return runs


def _record(records, norm):
    (rec,) = [r for r in records if r["group"]["norm"] == norm]
    return rec


def test_std_over_seeds_is_the_sample_std(seeded_runs):
    _, _, records = compare.summarize(seeded_runs, ["norm"], "val/loss")
    rec = _record(records, "layernorm")
    assert rec["final_mean"] == pytest.approx(2.0)
    assert rec["final_std"] == pytest.approx(1.0)  # n - 1 in the denominator; the population std is 0.816
    assert rec["diverged"] == 0


def test_diverged_runs_are_counted_but_not_averaged(seeded_runs):
    _, _, records = compare.summarize(seeded_runs, ["norm"], "val/loss")
    rec = _record(records, "rmsnorm")
    assert rec["final_mean"] == pytest.approx(5.0)  # the diverged seed's finite 0.5 is left out
    assert rec["final_std"] == 0.0  # one value behind the mean
    assert rec["diverged"] == 1 and rec["n"] == 2


# ---------------------------------------------------------------- grouping on a real store


def _log_run(client, exp_id, name, params, tags, metrics, history=None):
    from mlflow.entities import Metric, Param

    rid = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    points = [Metric(k, v, 0, 100) for k, v in metrics.items()]
    points += [Metric(k, v, 0, step) for k, values in (history or {}).items() for step, v in values]
    client.log_batch(rid, metrics=points, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(rid, "FINISHED")
    return rid


def _client(tmp_path, empty_store_file):
    import shutil

    from mlflow import MlflowClient

    shutil.copy(empty_store_file, tmp_path / "mlflow.db")
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, empty_store_file):
    """GPT and ViT runs with the same norms, two seeds each (what `normlight quickstart` x 2 seeds records)."""
    tmp_path = tmp_path_factory.mktemp("mixed")
    client = _client(tmp_path, empty_store_file)
    exp = client.create_experiment("mixed", artifact_location=(tmp_path / "mlartifacts").as_uri())
    for family, model, lr, loss, head in (
        ("gpt", "gpt-nano", "0.003", 3.2, "val/ppl"),
        ("vit", "vit-tiny", "0.002", 0.6, "val/acc1"),
    ):
        for norm, shift in (("layernorm", 0.0), ("rmsnorm", 0.1)):
            for seed in (0, 1):
                value = loss + shift + 0.02 * seed
                _log_run(
                    client,
                    exp,
                    f"{model}/{norm}/s{seed}",
                    {
                        "model.model": model,
                        "model.norm": norm,
                        "model.lr": lr,
                        "seed_everything": str(seed),
                        "trainer.enable_progress_bar": str(seed == 0),
                    },
                    {"family": family, "preset": model, "norm": norm, "placement": "pre"},
                    {"val/loss": value, head: 0.9 if head == "val/acc1" else math.exp(value)},
                    {"val/loss": [(50, value + 1.0), (100, value)]},
                )
    return client


def test_default_grouping_never_pools_families(tmp_path, mixed):
    client = mixed
    result = compare.compare(client, "mixed", None, "val/loss", tmp_path / "out")
    g = result["grouping"]
    assert g.pooled == ["seed_everything"]  # the progress-bar flag is not a result-changing key
    assert result["group_by"] == ["preset", "norm"]
    rows = {tuple(r[:2]): r for r in result["rows"]}
    assert set(rows) == {(m, n) for m in ("gpt-nano", "vit-tiny") for n in ("layernorm", "rmsnorm")}
    recs = {tuple(r["group"].values()): r for r in result["records"]}
    gpt = recs[("gpt-nano", "layernorm")]
    assert gpt["n"] == 2 and gpt["final_mean"] == pytest.approx(3.21)
    assert gpt["final_std"] == pytest.approx(statistics.stdev([3.2, 3.22]))
    # one LR per variant: no LR plot and no "max stable LR" drawn across families
    assert result["max_stable_lr"] == {} and not (tmp_path / "out" / "lr_sensitivity.png").exists()
    assert "pooled over: seed_everything" in g.describe()


def test_csv_has_separate_mean_std_n_and_headline_metrics(tmp_path, mixed):
    client = mixed
    compare.compare(client, "mixed", None, "val/loss", tmp_path / "out")
    with open(tmp_path / "out" / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {
        "final val/loss mean",
        "final val/loss std",
        "final val/loss n",
        "final val/ppl mean",
        "final val/acc1 mean",
    } <= set(rows[0])
    gpt = next(r for r in rows if r["preset"] == "gpt-nano" and r["norm"] == "rmsnorm")
    assert float(gpt["final val/loss mean"]) == pytest.approx(3.31)
    assert float(gpt["final val/loss std"]) == pytest.approx(statistics.stdev([3.3, 3.32]))
    assert gpt["final val/loss n"] == "2" and gpt["final val/acc1 n"] == "0" and gpt["final val/acc1 mean"] == ""
    assert float(gpt["final val/ppl mean"]) == pytest.approx(statistics.fmean([math.exp(3.3), math.exp(3.32)]))
    vit = next(r for r in rows if r["preset"] == "vit-tiny" and r["norm"] == "layernorm")
    assert float(vit["final val/acc1 mean"]) == pytest.approx(0.9) and vit["final val/ppl n"] == "0"
    assert all("+-" not in v for r in rows for v in r.values())


def test_declared_group_by_says_what_it_pooled(tmp_path, mixed):
    client = mixed
    result = compare.compare(client, "mixed", ["norm"], "val/loss", tmp_path / "out")
    assert [r[0] for r in result["rows"]] == ["layernorm", "rmsnorm"]
    assert set(result["grouping"].pooled) == {"model.model", "model.lr", "seed_everything"}
    assert "pooled over: model.lr, model.model, seed_everything" in result["grouping"].describe()


def test_lr_plot_joins_only_runs_of_one_variant_with_readable_ticks(tmp_path, empty_store_file):
    """Two placements x 7 LRs (and a ViT run that must not join any line); tick labels never overlap."""
    import matplotlib

    matplotlib.use("Agg")

    client = _client(tmp_path, empty_store_file)
    exp = client.create_experiment("lrs", artifact_location=(tmp_path / "mlartifacts").as_uri())
    lrs = ["0.0001", "0.0003", "0.001", "0.002", "0.003", "0.01", "0.03"]
    for placement in ("pre", "post"):
        for i, lr in enumerate(lrs):
            loss = 3.0 + abs(i - 3) * 0.2 + (0.05 if placement == "post" else 0)
            _log_run(
                client,
                exp,
                f"{placement}/{lr}",
                {"model.model": "gpt-nano", "model.placement": placement, "model.lr": lr},
                {"preset": "gpt-nano", "placement": placement},
                {"val/loss": loss},
            )
    _log_run(
        client,
        exp,
        "vit",
        {"model.model": "vit-tiny", "model.placement": "pre", "model.lr": "0.5"},
        {"preset": "vit-tiny", "placement": "pre"},
        {"val/loss": 0.5},
    )
    runs = compare.load_runs(client, "lrs")
    grouping = compare.plan_groups(runs)
    path, stable = compare.plot_lr_sensitivity(runs, grouping, "lr", "val/loss", tmp_path / "lr.png")
    assert set(stable) == {"gpt-nano pre", "gpt-nano post"} and stable["gpt-nano pre"] == 0.003
    fig = _last_lr_figure(runs, grouping, tmp_path)
    ax = fig.axes[0]
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in labels] == ["1e-4", "3e-4", "1e-3", "2e-3", "3e-3", "1e-2", "3e-2"]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]), "x tick labels overlap"
    assert "pooled over" in ax.get_title() or "one run per line" in ax.get_title()


def _last_lr_figure(runs, grouping, tmp_path):
    import matplotlib.pyplot as plt

    real_close = plt.close
    kept = []
    plt.close = lambda fig=None: kept.append(fig)
    try:
        compare.plot_lr_sensitivity(runs, grouping, "lr", "val/loss", tmp_path / "lr2.png")
    finally:
        plt.close = real_close
    fig = kept[-1]
    fig.canvas.draw()
    return fig
