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
    # a seed that diverged after a finite last value, a run without the metric and a nan value (listed first)
    odd = [(0.3, False, nan), (0.01, False, 2.0), (0.1, True, 2.0), (0.03, False, None), (0.02, False, 2.1)]
    assert compare.max_stable_lr(odd) == 0.02


def test_higher_is_better_reads_the_last_part_of_the_name():
    names = ["val/acc1", "acc1", "val/top1_acc", "val/loss", "accuracy_study/loss", "a/acc/loss"]
    assert [compare.higher_is_better(n) for n in names] == [True, True, True, False, False, False]


def test_within_tolerance_is_relative_to_the_best_and_inclusive():
    assert compare.within_tolerance(1.5, 1.0, 0.5) and not compare.within_tolerance(1.5001, 1.0, 0.5)
    assert not compare.within_tolerance(2.0, 1.0, 0.5)  # minimizing by default
    assert compare.within_tolerance(0.5, 1.0, 0.5, maximize=True) and not compare.within_tolerance(
        0.4999, 1.0, 0.5, True
    )
    assert compare.within_tolerance(1.85, 2.0, 0.1, maximize=True)  # 10% of 2.0, not 0.1 / 2.0
    assert compare.within_tolerance(-0.9, -1.0, 0.1) and not compare.within_tolerance(-0.89, -1.0, 0.1)  # |best|


def test_groups_are_named_by_the_sweep_axes_in_their_order():
    """The sweep's declared axes (tag sweep_axes), seeds left out, name the groups by their last key part,
    before the naming tags; runs that disagree on their axes fall back to the naming tags."""
    runs = [
        _entity(
            i,
            {"val/loss": 1.0},
            {
                "sweep_axes": "model.lr,model.kw.depth,seed_everything",
                "cfg.model.lr": lr,
                "cfg.model.kw.depth": depth,
                "cfg.model.placement": placement,
                "cfg.seed_everything": seed,
            },
        )
        for i, (lr, depth, placement, seed) in enumerate(
            [("0.1", "2", "pre", "0"), ("0.1", "2", "pre", "1"), ("0.2", "4", "post", "0"), ("0.2", "4", "post", "1")]
        )
    ]
    assert compare.plan_groups(runs).columns == ["lr", "depth"]
    assert compare.plan_groups(runs).pooled == ["seed_everything"]
    odd = _entity(
        9,
        {"val/loss": 1.0},
        {
            "sweep_axes": "",
            "cfg.model.lr": "0.3",
            "cfg.model.kw.depth": "8",
            "cfg.model.placement": "mid",
            "cfg.seed_everything": "0",
        },
    )
    assert compare.plan_groups([*runs, odd]).columns == ["lr", "depth"]  # an empty tag is no declaration
    other = _entity(
        8,
        {"val/loss": 1.0},
        {
            "sweep_axes": "model.placement",
            "cfg.model.lr": "0.3",
            "cfg.model.kw.depth": "8",
            "cfg.model.placement": "mid",
            "cfg.seed_everything": "0",
        },
    )
    assert compare.plan_groups([*runs, other]).columns == ["placement"]  # two sweeps: the naming tags
    one_seed = [r for r in runs if r.data.tags["cfg.seed_everything"] == "0"]
    assert compare.plan_groups(one_seed).columns == ["lr", "depth"]  # a seed axis never names a group


def test_column_labels_are_the_last_key_part_unless_two_columns_share_it():
    assert compare.column_labels(["model.kw.depth", "data.lr", "model.lr", "norm"]) == [
        "depth",
        "data.lr",
        "model.lr",
        "norm",
    ]


def test_groups_sort_numbers_numerically_then_text():
    values = ["10", "abc", "9", "-", "1e-3"]
    assert sorted(values, key=compare._sort_key) == ["1e-3", "9", "10", "-", "abc"]


def test_table_rows_sort_numbers_numerically():
    runs = [_entity(i, {"val/loss": 1.0}, {"depth": d}) for i, d in enumerate(["10", "9", "deep"])]
    _, rows, _ = compare.summarize(runs, ["depth"], "val/loss")
    assert [r[0] for r in rows] == ["9", "10", "deep"]  # not "10" < "9" as text


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
    still logged a finite last val/loss (0.5); groupnorm with two seeds. Some runs also have a best val/loss,
    a perplexity and a throughput."""
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

    best, ppl, tps = "summary/best_val_loss", "val/ppl", "summary/tokens_per_sec"
    rows = [
        ("layernorm", 1, 1.0, "false", {best: 0.9, ppl: 2.0}),
        ("layernorm", 2, 2.0, "false", {best: 1.9, ppl: 4.0}),
        ("layernorm", 3, 3.0, "false", {best: 2.9}),
        ("rmsnorm", 1, 5.0, "false", {best: 4.0, ppl: 10.0, tps: 50.0}),
        # diverged: left out of the final values, not of best and throughput
        ("rmsnorm", 2, 0.5, "true", {best: 0.4, ppl: 1.5, tps: 150.0}),
        ("groupnorm", 1, 1.0, "false", {tps: 100.0}),
        ("groupnorm", 2, 1.5, "false", {tps: 300.0}),
    ]
    runs = []
    for i, (norm, seed, loss, diverged, extra) in enumerate(rows):
        info = RunInfo(f"run{i}", "1", "", "FINISHED", 0, 1, "active", run_name=f"{norm}-{seed}")
        data = RunData(
            metrics=[Metric(k, v, 1, 10) for k, v in {"val/loss": loss, **extra}.items()],
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


def test_table_rows_header_markdown_and_csv(seeded_runs, tmp_path):
    """The printed row shows "mean +- std" only over two or more values, the mean alone for one, "-" for none;
    the markdown file is that table; the CSV has the numbers (std empty below two values)."""
    header, rows, records = compare.summarize(seeded_runs, ["norm"], "val/loss")
    assert header == [
        "norm",
        "runs",
        "diverged",
        "final val/loss",
        "best val/loss",
        "final val/ppl",
        "tokens_per_sec",
    ]
    assert rows == [
        ["groupnorm", "2", "0", "1.25 +- 0.35", "-", "-", "200 +- 1.4e+02"],
        ["layernorm", "3", "0", "2 +- 1", "1.9 +- 1", "3 +- 1.4", "-"],
        ["rmsnorm", "2", "1", "5", "2.2 +- 2.5", "10", "100 +- 71"],
    ]
    ln = _record(records, "layernorm")
    assert (ln["final_n"], ln["best_mean"], ln["best_std"]) == (3, pytest.approx(1.9), pytest.approx(1.0))
    csv_path, md_path = compare.write_tables(tmp_path, header, rows, records)
    assert (csv_path.name, md_path.name) == ("comparison.csv", "comparison.md")
    assert md_path.read_text() == (
        "| norm | runs | diverged | final val/loss | best val/loss | final val/ppl | tokens_per_sec |\n"
        "|---|---|---|---|---|---|---|\n"
        "| groupnorm | 2 | 0 | 1.25 +- 0.35 | - | - | 200 +- 1.4e+02 |\n"
        "| layernorm | 3 | 0 | 2 +- 1 | 1.9 +- 1 | 3 +- 1.4 | - |\n"
        "| rmsnorm | 2 | 1 | 5 | 2.2 +- 2.5 | 10 | 100 +- 71 |\n"
    )
    with open(csv_path, newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0][:6] == ["norm", "runs", "diverged", "final val/loss mean", "final val/loss std", "final val/loss n"]
    rms = dict(zip(table[0], table[3]))
    assert rms["norm"] == "rmsnorm" and rms["runs"] == "2" and rms["diverged"] == "1"
    assert (rms["final val/loss mean"], rms["final val/loss std"], rms["final val/loss n"]) == ("5.0", "", "1")
    assert float(rms["best val/loss std"]) == pytest.approx(statistics.stdev([4.0, 0.4]))

    # the metric asked for is a headline metric: no second column for it
    header, _, _ = compare.summarize(seeded_runs, ["norm"], "val/ppl")
    assert header[3:] == ["final val/ppl", "best val/ppl", "tokens_per_sec"]


def test_tables_of_one_group_and_of_plain_rows(seeded_runs, tmp_path):
    """One group of one run (the CSV header comes from it) and tables given as strings only (written as they are)."""
    header, rows, records = compare.summarize(seeded_runs[:1], ["norm"], "val/loss")
    assert rows == [["layernorm", "1", "0", "1", "0.9", "2"]]
    compare.write_tables(tmp_path, header, rows, records)
    with open(tmp_path / "comparison.csv", newline="") as fh:
        assert next(csv.reader(fh))[:4] == ["norm", "runs", "diverged", "final val/loss mean"]
    compare.write_tables(tmp_path, ["a", "b"], [["1", "2"]])
    assert (tmp_path / "comparison.csv").read_bytes() == b"a,b\r\n1,2\r\n"
    compare.write_tables(tmp_path, ["a", "b"], [], [])
    assert (tmp_path / "comparison.csv").read_bytes() == b"a,b\r\n"
    assert (tmp_path / "comparison.md").read_text() == "| a | b |\n|---|---|\n"


def test_grouping_description_names_the_fields_and_what_was_pooled():
    declared = compare.Grouping(["norm", "lr"], [], ["norm", "lr"], [f"k{i}" for i in range(9)])
    assert (
        declared.describe() == "grouped by --group-by norm,lr; pooled over: k0, k1, k2, k3, k4, k5, k6, k7 and 1 more"
    )
    default = compare.Grouping(None, [f"k{i}" for i in range(8)], [], [])
    assert default.describe() == (
        "grouped by every varying config key but the seed (8 keys); pooled over: nothing (one run per group)"
    )
    assert default.differing() == "k0, k1, k2, k3, k4, k5, k6, k7"
    assert compare.Grouping(None, [f"k{i}" for i in range(10)], [], []).differing().endswith("k7 and 2 more")


def test_labels_phrases_and_step_axis():
    assert compare._label({}) == "all"
    assert compare._label({"preset": "gpt-nano", "norm": "ln", "lr": "0.1", "model": "m", "placement": "pre"}) == (
        "gpt-nano ln lr=0.1 m pre"
    )
    assert compare._pooled_phrase(None) == "mean over seeds"
    assert compare._pooled_phrase([]) == "one run per line"
    assert compare._pooled_phrase(["seed", "model.lr"]) == "mean over seed, model.lr"

    def run(**tags):
        return SimpleNamespace(data=SimpleNamespace(tags=tags))

    runs = [run(), run(**{"step_axis/diag/removed": "layers removed"}), run(**{"step_axis/diag/removed": "other"})]
    assert compare.step_axis(runs, "diag/removed") == "layers removed"
    assert compare.step_axis(runs, "val/loss") == "step"


def test_format_lr_labels():
    labels = [1e-3, 3e-2, 2.5e-4, 0.5, 0.1, 0.01, 1.0, 100.0, 12345.0, 0.0, -1.0, float("inf")]
    assert [compare.format_lr(v) for v in labels] == [
        "1e-3",
        "3e-2",
        "2.5e-4",
        "0.5",
        "0.1",
        "1e-2",
        "1",
        "1e2",
        "1.23e4",
        "0",
        "-1",
        "inf",
    ]


def test_stability_point_reads_the_tag_or_the_summary_metric(seeded_runs):
    diverged = seeded_runs[4]  # rmsnorm seed 2: tagged diverged, finite last val/loss 0.5
    assert compare.stability_point(diverged) == (True, 0.5)
    assert compare.stability_point(diverged, "val/ppl") == (True, 1.5)
    assert compare.stability_point(seeded_runs[0]) == (False, 1.0)
    by_metric = [_entity(i, {"summary/diverged": v, "val/loss": 2.0}) for i, v in ((1, 1.0), (2, 0.0))]
    assert [compare.stability_point(r) for r in by_metric] == [(True, 2.0), (False, 2.0)]
    assert compare.stability_point(_entity(3, {})) == (False, None)


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
    assert compare.auto_group_fields(compare.load_runs(client, "mixed")) == ["preset", "norm"]


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
    assert all(t.get_rotation() == 45 and t.get_ha() == "right" for t in labels)  # more than 6 LRs: slanted
    six = [r for r in runs if r.data.params["model.lr"] != "0.03"]
    labels = [t for t in _last_lr_figure(six, compare.plan_groups(six), tmp_path).axes[0].get_xticklabels()]
    assert len(labels) == 6 and all(t.get_rotation() == 0 and t.get_ha() == "center" for t in labels)
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


# ---------------------------------------------------------------- logging the comparison to MLflow


def test_log_comparison_records_the_outputs_and_tags_each_variant_with_its_max_stable_lr(tmp_path, empty_store_file):
    """A variant stable at both LRs gets the larger one; a variant diverged at every LR gets 'none'; the outputs
    land in a run of ``<experiment>/compare``, artifacts beside the sqlite store, and the training experiment
    gets its UI view."""
    from normlight.tracking import artifacts
    from normlight.tracking.presentation import MAX_STABLE_LR_TAG, VIEW_TAG

    artifacts.install()  # mlflow-artifacts:/ resolved beside the sqlite store, as in every normlight process
    client = _client(tmp_path, empty_store_file)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = client.create_experiment("logged", artifact_location=(tmp_path / "mlartifacts").as_uri())
    ids = {}
    for placement, lr, loss, diverged in (
        ("pre", "0.001", 3.0, "false"),
        ("pre", "0.01", 3.1, "false"),  # within 10% of 3.0: the max stable LR
        ("post", "0.001", 9.0, "true"),
        ("post", "0.01", 9.0, "true"),
    ):
        ids[placement, lr] = _log_run(
            client,
            exp,
            f"{placement}/{lr}",
            {"model.placement": placement, "model.lr": lr},
            {"placement": placement, "diverged": diverged},
            {"val/loss": loss},
        )
    result = compare.compare(client, "logged", None, "val/loss", tmp_path / "out")
    rid = compare.log_comparison(client, "logged", result, "val/loss", uri)

    run = client.get_run(rid)
    cmp_exp = client.get_experiment(run.info.experiment_id)
    assert cmp_exp.name == compare.compare_experiment_name("logged") == "logged/compare"
    assert cmp_exp.artifact_location == "mlflow-artifacts:/"  # beside the sqlite store, not ./mlruns
    assert run.info.status == "FINISHED" and run.info.run_name == "compare/val/loss"
    tags = run.data.tags
    assert tags[compare.COMPARE_TAG] == "true"
    assert tags["compare.experiment"] == "logged" and tags["compare.metric"] == "val/loss"
    assert tags["compare.group_by"] == "placement,lr" and tags["compare.pooled"] == "-"
    assert tags["mlflow.note.content"] == (
        "Comparison of experiment 'logged' on val/loss: grouped by every varying config key but the seed (2 keys); "
        "pooled over: nothing (one run per group)."
    )
    logged = sorted(a.path for a in client.list_artifacts(rid, "compare"))
    assert logged == [
        "compare/comparison.csv",
        "compare/comparison.md",
        "compare/curves.png",
        "compare/lr_sensitivity.png",
    ]
    assert (tmp_path / "mlartifacts").is_dir()
    for (placement, _), run_id in ids.items():
        expected = "1e-2" if placement == "pre" else "none (all diverged)"
        assert client.get_run(run_id).data.tags[MAX_STABLE_LR_TAG] == expected
    assert VIEW_TAG in client.get_experiment(exp).tags

    # a result without a grouping or run lists (a script's own dict): no pooled tag, no note, no run tagged
    bare = {"group_by": ["norm"], "files": [], "max_stable_lr": {"x": 0.1}}
    tags = client.get_run(compare.log_comparison(client, "logged", bare, "val/acc1", uri)).data.tags
    assert tags["compare.group_by"] == "norm" and tags["compare.metric"] == "val/acc1"
    assert "compare.pooled" not in tags and "mlflow.note.content" not in tags
    pooled = compare.Grouping(["norm"], [], ["norm"], ["model.lr", "seed"])
    listed = {**bare, "grouping": pooled, "variant_runs": {"other variant": [ids["pre", "0.01"]]}}
    tags = client.get_run(compare.log_comparison(client, "logged", listed, "val/loss", uri)).data.tags
    assert tags["compare.pooled"] == "model.lr,seed"
    assert tags["mlflow.note.content"].endswith("grouped by --group-by norm; pooled over: model.lr, seed.")
    assert client.get_run(ids["pre", "0.01"]).data.tags[MAX_STABLE_LR_TAG] == "1e-2"  # variant x lists no run


# ---------------------------------------------------------------- what the plots show


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, kept open (they close each one after saving) so a test can read them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real_close, kept = plt.close, []
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    for fig in kept:
        real_close(fig)


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _panel_pixels(n: int) -> tuple[int, int]:
    return round(compare.PANEL_INCHES[0] * n * compare.DPI), round(compare.PANEL_INCHES[1] * compare.DPI)


def _entity(i: int, metrics: dict, tags: dict | None = None):
    from mlflow.entities import Metric, Run, RunData, RunInfo, RunTag

    info = RunInfo(f"r{i}", "1", "", "FINISHED", 0, 1, "active", run_name=f"r{i}")
    data = RunData(
        metrics=[Metric(k, v, 1, 10) for k, v in metrics.items()], tags=[RunTag(k, v) for k, v in (tags or {}).items()]
    )
    return Run(info, data)


def _styled(ax, legend: bool) -> None:
    """The shared look: title and legend font sizes, a faint grid."""
    assert ax.title.get_fontsize() == compare.TITLE_PT
    grid = ax.xaxis.get_gridlines()[0]
    assert grid.get_visible() and grid.get_alpha() == compare.GRID_ALPHA
    if legend:
        assert all(t.get_fontsize() == compare.LEGEND_PT for t in ax.get_legend().get_texts())
    else:
        assert ax.get_legend() is None


def test_profiles_plot_the_mean_per_layer_of_each_group(tmp_path, figures):
    """Layers sorted by number (l10 after l2), non-finite values and non-layer metrics left out, one panel per
    kind with data, log y axis, integer block ticks."""
    nan = float("nan")
    ln = [
        _entity(
            1,
            {
                "diag/grad_norm/l0": 1.0,
                "diag/grad_norm/l1": 3.0,
                "diag/grad_norm/l2": 4.0,
                "diag/grad_norm/l10": 5.0,
                "diag/resid_rms/l0": 2.0,
                "diag/grad_norm/total": 99.0,
                "diag/grad_norm/l1x": 99.0,
                "val/loss": 1.0,
            },
        ),
        _entity(2, {"diag/grad_norm/l0": 3.0, "diag/grad_norm/l1": nan, "diag/resid_rms/l1": 4.0}),
    ]
    rms = [_entity(3, {"diag/grad_norm/l1": 10.0})]
    records = [{"group": {"norm": "layernorm"}, "runs": ln}, {"group": {"norm": "rmsnorm"}, "runs": rms}]
    path = compare.plot_profiles(records, tmp_path / "profiles.png", ["seed_everything"])
    assert path == tmp_path / "profiles.png" and _png_size(path) == _panel_pixels(2)
    (fig,) = figures
    grad, resid = fig.axes
    assert [(list(line.get_xdata()), list(line.get_ydata()), line.get_label()) for line in grad.lines] == [
        ([0, 1, 2, 10], [2.0, 3.0, 4.0, 5.0], "layernorm"),
        ([1], [10.0], "rmsnorm"),
    ]
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in resid.lines] == [([0, 1], [2.0, 4.0])]
    assert all(line.get_marker() == "." for line in grad.lines + resid.lines)
    assert (grad.get_ylabel(), resid.get_ylabel()) == ("diag/grad_norm", "diag/resid_rms")
    assert grad.get_title() == "gradient norm per block (last diagnostic step, mean over seed_everything)"
    assert resid.get_title() == "residual-stream RMS per block (last diagnostic step, mean over seed_everything)"
    for ax in (grad, resid):
        assert ax.get_yscale() == "log" and ax.get_xlabel() == "block (depth)"
    assert all(t == int(t) for t in resid.get_xticks())  # blocks 0 and 1: no 0.2, 0.4 ... ticks
    _styled(grad, legend=False)
    _styled(resid, legend=True)
    assert [t.get_text() for t in resid.get_legend().get_texts()] == ["layernorm"]

    # one kind only: one panel; no per-layer metric at all: no plot
    compare.plot_profiles(records[1:], tmp_path / "one.png")
    assert _png_size(tmp_path / "one.png") == _panel_pixels(1)
    assert "mean over seeds" in figures[-1].axes[0].get_title()
    assert compare.plot_profiles([{"group": {}, "runs": [_entity(4, {"val/loss": 1.0})]}], tmp_path / "no.png") is None
    assert not (tmp_path / "no.png").exists()


def test_curves_plot_mean_and_min_max_band_per_group_over_steps(tmp_path, empty_store_file, figures):
    """Steps a run lacks and non-finite points are left out of a step's mean and band; a group whose points are
    all non-finite draws no line (the next group still does); the x label is the metric's step axis tag;
    metrics nobody logged get no panel."""
    client = _client(tmp_path, empty_store_file)
    exp = client.create_experiment("curves", artifact_location=(tmp_path / "mlartifacts").as_uri())
    nan = float("nan")
    for norm, seed, val, train, tags in (
        ("layernorm", 0, [(10, 4.0), (20, 3.0)], [(10, nan)], {}),
        ("layernorm", 1, [(10, 5.0), (20, 2.0), (30, 1.5)], [(10, nan), (20, nan)], {"step_axis/val/loss": "epoch"}),
        ("rmsnorm", 0, [(10, 4.5)], [(10, 6.0), (20, nan)], {}),
        ("rmsnorm", 1, [], [], {}),
    ):
        history = {"val/loss": val, "train/loss": train}
        _log_run(
            client,
            exp,
            f"{norm}/{seed}",
            {"seed_everything": str(seed)},
            {"norm": norm, **tags},
            {"other": 1.0},
            history,
        )
    runs = compare.load_runs(client, "curves")
    _, _, records = compare.summarize(runs, ["norm"], "other")
    path = compare.plot_curves(
        client, records, ["val/loss", "train/loss", "missing"], tmp_path / "c.png", ["seed_everything"]
    )
    assert path == tmp_path / "c.png" and _png_size(path) == _panel_pixels(2)
    (fig,) = figures
    val, train = fig.axes
    lines = [(list(line.get_xdata()), list(line.get_ydata()), line.get_label()) for line in val.lines]
    assert lines == [([10, 20, 30], [4.5, 2.5, 1.5], "layernorm (n=2)"), ([10], [4.5], "rmsnorm (n=1)")]
    band = val.collections[0]
    assert {tuple(v) for v in band.get_paths()[0].vertices} >= {(10, 4), (20, 2), (30, 1.5), (10, 5), (20, 3)}
    assert band.get_alpha() == compare.BAND_ALPHA
    assert tuple(band.get_facecolor()[0][:3]) == pytest.approx(matplotlib_rgb(val.lines[0].get_color()))
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in train.lines] == [([10], [6.0])]
    assert (val.get_xlabel(), train.get_xlabel()) == ("epoch", "step")
    assert (val.get_ylabel(), train.get_ylabel()) == ("val/loss", "train/loss")
    assert val.get_title() == "val/loss: mean over seed_everything, band = min..max"
    _styled(val, legend=False)
    _styled(train, legend=True)
    assert [t.get_text() for t in train.get_legend().get_texts()] == ["rmsnorm (n=1)"]
    assert train.get_legend()._loc == 1  # upper right

    assert compare.plot_curves(client, records, ["missing"], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def matplotlib_rgb(color) -> tuple:
    from matplotlib.colors import to_rgb

    return to_rgb(color)


def test_lr_plot_marks_diverged_seeds_and_the_max_stable_lr_per_variant(tmp_path, empty_store_file, figures):
    from matplotlib.markers import MarkerStyle

    """Per variant trained at two or more LRs: the mean final metric of the non-diverged seeds per LR, an x at the
    top for each LR where a seed diverged, a star at the max stable LR; a variant at one LR and a run without a
    numeric LR are not drawn; the tolerance decides the star."""
    client = _client(tmp_path, empty_store_file)
    exp = client.create_experiment("lrstars", artifact_location=(tmp_path / "mlartifacts").as_uri())
    for placement, lr, seed, loss, diverged in (
        ("pre", "0.001", 0, 3.0, "false"),
        ("pre", "0.001", 1, 3.2, "false"),
        ("pre", "0.01", 0, 3.1, "false"),
        ("pre", "0.01", 1, 9.0, "true"),  # one diverged seed: 0.01 is not stable, its mean is 3.1
        ("pre", "0.1", 0, float("nan"), "true"),
        ("post", "0.001", 0, 3.3, "false"),
        ("post", "0.01", 0, 3.5, "false"),  # 6% worse than the best: stable at 10%, not at 5%
        ("mid", "0.001", 0, 3.0, "false"),  # one LR only: no line
        ("post", "auto", 0, 1.0, "false"),  # no numeric LR: left out
        ("solo", "0.001", 0, 3.0, "false"),
        ("solo", "0.01", 0, float("nan"), "false"),  # not tagged diverged, but no finite value: an x too
    ):
        acc = {("post", "0.001"): 0.9, ("post", "0.01"): 0.5}.get((placement, lr))
        _log_run(
            client,
            exp,
            f"{placement}/{lr}/{seed}",
            {"model.placement": placement, "model.lr": lr, "seed_everything": str(seed)},
            {"placement": placement, "diverged": diverged},
            {"val/loss": loss, **({"val/acc1": acc} if acc else {})},
        )
    runs = compare.load_runs(client, "lrstars")
    grouping = compare.plan_groups(runs)
    members: dict = {}
    path, stable = compare.plot_lr_sensitivity(runs, grouping, "lr", "val/loss", tmp_path / "lr.png", 0.1, members)
    assert path == tmp_path / "lr.png" and stable == {"post": 0.01, "pre": 0.001, "solo": 0.001}
    assert _png_size(path) == tuple(round(v * compare.DPI) for v in compare.LR_FIGURE_INCHES)
    by_id = {r.info.run_id: r.info.run_name for r in runs}
    assert {k: sorted(by_id[i] for i in v) for k, v in members.items()} == {
        "post": ["post/0.001/0", "post/0.01/0"],
        "pre": ["pre/0.001/0", "pre/0.001/1", "pre/0.01/0", "pre/0.01/1", "pre/0.1/0"],
        "solo": ["solo/0.001/0", "solo/0.01/0"],
    }
    (fig,) = figures
    (ax,) = fig.axes
    post, pre, solo = ax.lines
    assert (post.get_label(), list(post.get_xdata()), list(post.get_ydata())) == ("post", [0.001, 0.01], [3.3, 3.5])
    assert (pre.get_label(), list(pre.get_xdata())) == ("pre", [0.001, 0.01, 0.1])
    assert list(pre.get_ydata())[:2] == pytest.approx([3.1, 3.1]) and math.isnan(pre.get_ydata()[2])
    assert post.get_marker() == pre.get_marker() == "o"
    top = 3.5 * 1.05  # above the highest finite non-diverged value
    post_star, pre_x, pre_star, solo_x, solo_star = ax.collections
    assert solo_x.get_offsets().ravel().tolist() == pytest.approx([0.01, top])
    x_mark, star = (MarkerStyle(m) for m in ("x", "*"))  # diverged seeds as x, the max stable LR as a star
    for mark, style in ((pre_x, x_mark), (solo_x, x_mark), (post_star, star), (pre_star, star)):
        want = style.get_path().transformed(style.get_transform()).vertices
        got = mark.get_paths()[0].vertices
        assert got.shape == want.shape and (got == want).all()
    assert post_star.get_offsets().tolist() == [[0.01, 3.5]] and list(post_star.get_sizes()) == [180]
    assert pre_x.get_offsets().ravel().tolist() == pytest.approx([0.01, top, 0.1, top])
    assert pre_star.get_offsets().ravel().tolist() == pytest.approx([0.001, 3.1]) and pre_star.get_zorder() == 3
    for line, marks in ((post, [post_star]), (pre, [pre_x, pre_star])):
        for mark in marks:
            assert tuple(mark.get_facecolor()[0][:3]) == pytest.approx(matplotlib_rgb(line.get_color()))
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [0.001, 0.01, 0.1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1e-3", "1e-2", "0.1"]
    assert all(t.get_rotation() == 0 and t.get_ha() == "center" for t in ax.get_xticklabels())
    assert list(ax.get_xticks(minor=True)) == []
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("learning rate (lr)", "final val/loss")
    assert ax.get_title() == (
        "LR sensitivity, mean over seed_everything\n* = max stable LR (within 10% of best), x = diverged"
    )
    _styled(ax, legend=True)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["post", "pre", "solo"]

    # a tighter tolerance moves post's star; declared fields group the same way (the LR field is dropped)
    _, stable = compare.plot_lr_sensitivity(runs, ["placement", "lr"], "lr", "val/loss", tmp_path / "b.png", 0.05)
    assert stable == {"post": 0.001, "pre": 0.001, "solo": 0.001}
    assert "within 5% of best" in figures[-1].axes[0].get_title()
    _, stable = compare.plot_lr_sensitivity(runs, grouping, "lr", "val/acc1", tmp_path / "acc.png")
    assert stable["post"] == 0.001  # accuracy is maximized: 0.5 at 0.01 is 44% worse than 0.9
    _, stable = compare.plot_lr_sensitivity(runs, ["lr"], "lr", "val/loss", tmp_path / "c.png")
    assert stable == {"all": 0.001}  # declared fields: every placement pooled into one variant
    # every seed diverged: the x marks sit at 1.0 (no finite value to sit above), no star
    diverged = [r for r in runs if r.info.run_name in ("pre/0.01/1", "pre/0.1/0")]
    _, stable = compare.plot_lr_sensitivity(
        diverged, compare.plan_groups(diverged), "lr", "val/loss", tmp_path / "d.png"
    )
    assert stable == {"all": None}
    assert figures[-1].axes[0].collections[0].get_offsets().ravel().tolist() == [0.01, 1.0, 0.1, 1.0]
    # a variant without a star before one with a star: each mark still has its own line's colour
    mixed = diverged + [r for r in runs if r.info.run_name.startswith("solo/")]
    compare.plot_lr_sensitivity(mixed, compare.plan_groups(mixed), "lr", "val/loss", tmp_path / "e.png")
    ax = figures[-1].axes[0]
    assert ax.lines[1].get_label() == "solo"
    for mark in ax.collections[1:]:  # solo's x and star
        assert tuple(mark.get_facecolor()[0][:3]) == pytest.approx(matplotlib_rgb(ax.lines[1].get_color()))


def test_compare_of_one_sweep_writes_every_output(tmp_path, empty_store_file, figures):
    """Only the sweep's runs; the table, curves of the metric and of train/loss, profiles and the LR plot, in a
    new nested folder (and again into the same folder); the default LR field and tolerance; a missing metric
    names the ones there are (per-layer diagnostics left out)."""
    client = _client(tmp_path, empty_store_file)
    exp = client.create_experiment("glue", artifact_location=(tmp_path / "mlartifacts").as_uri())
    for placement, lr, loss, sweep in (
        ("pre", "0.001", 3.0, "s1"),
        ("pre", "0.01", 3.2, "s1"),  # 7% worse: stable at the default 10%
        ("post", "0.001", 3.0, "s1"),
        ("post", "0.01", 4.5, "s1"),  # 50% worse: not stable
        ("odd", "0.001", 1.0, "s2"),
    ):
        _log_run(
            client,
            exp,
            f"{placement}/{lr}",
            {"model.placement": placement, "model.lr": lr},
            {"placement": placement, "sweep": sweep},
            {"val/loss": loss, "diag/grad_norm/l0": 1.0},
            {"val/loss": [(10, loss + 1)], "train/loss": [(10, 5.0), (20, 4.0)]},
        )
    out = tmp_path / "a" / "b"
    result = compare.compare(client, "glue", None, "val/loss", out, sweep="s1")
    names = ["comparison.csv", "comparison.md", "curves.png", "profiles.png", "lr_sensitivity.png"]
    assert result["files"] == [out / n for n in names] and all(f.exists() for f in result["files"])
    assert result["n_runs"] == 4 and result["max_stable_lr"] == {"post": 0.001, "pre": 0.01}
    assert result["header"][:4] == ["placement", "lr", "runs", "diverged"]
    # sorted by the group key (the varying config keys in name order: model.lr, then model.placement)
    assert [r[:2] for r in result["rows"]] == [["post", "0.001"], ["pre", "0.001"], ["post", "0.01"], ["pre", "0.01"]]
    assert [r["group"] for r in result["records"]][0] == {"placement": "post", "lr": "0.001"}
    assert sorted(result["variant_runs"]) == ["post", "pre"] and all(
        len(v) == 2 for v in result["variant_runs"].values()
    )
    assert result["group_by"] == ["placement", "lr"] and result["grouping"].fields is None
    assert _png_size(out / "curves.png") == _panel_pixels(2)  # the metric and train/loss
    assert [ax.get_ylabel() for ax in figures[0].axes] == ["val/loss", "train/loss"]
    # the titles say what the grouping pooled: nothing here (one run per line), not "seeds"
    assert "one run per line" in figures[0].axes[0].get_title() and "one run per line" in figures[1].axes[0].get_title()

    again = compare.compare(client, "glue", None, "train/loss", out, sweep="s1")  # same folder again
    assert [ax.get_ylabel() for ax in figures[3].axes] == ["train/loss"]  # no second train/loss panel
    assert again["n_runs"] == 4
    with pytest.raises(
        compare.CompareError,
        match=r"^no run of 'glue' has metric 'val/nope'; available: "
        r"train/loss, val/loss$",
    ):
        compare.compare(client, "glue", None, "val/nope", out)

    # what load_runs keeps: FINISHED training runs (of the sweep asked for); the errors name what exists
    from normlight.tracking.presentation import PARENT_TAG

    for name, tags, status in (
        ("failed", {"sweep": "s1"}, "FAILED"),
        ("running", {"sweep": "s1"}, None),
        ("parent", {"sweep": "s1", PARENT_TAG: "true"}, "FINISHED"),
        ("comparison", {"sweep": "s1", compare.COMPARE_TAG: "true"}, "FINISHED"),
        ("not a comparison", {"sweep": "s1", compare.COMPARE_TAG: "false"}, "FINISHED"),
    ):
        rid = client.create_run(exp, run_name=name, tags=tags).info.run_id
        if status:
            client.set_terminated(rid, status)
    kept = sorted(r.info.run_name for r in compare.load_runs(client, "glue", "s1"))
    assert kept == ["not a comparison", "post/0.001", "post/0.01", "pre/0.001", "pre/0.01"]
    assert len(compare.load_runs(client, "glue")) == 6
    with pytest.raises(compare.CompareError, match=r"^experiment 'glue' has no FINISHED runs of sweep 's9'$"):
        compare.load_runs(client, "glue", "s9")
    client.create_experiment("empty", artifact_location=(tmp_path / "mlartifacts").as_uri())
    with pytest.raises(compare.CompareError, match=r"^experiment 'empty' has no FINISHED runs$"):
        compare.load_runs(client, "empty")
    with pytest.raises(
        compare.CompareError, match=r"^no experiment named 'nope'; experiments in this store: Default, empty, glue$"
    ):
        compare.load_runs(client, "nope")
