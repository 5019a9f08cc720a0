"""``normlight quickstart``: a small norm comparison on GPT, ViT and ResNet, on data that ships with Python.

Reads ``configs/quickstart.yaml`` (three families x three norms), trains every run in this process through
the same LightningCLI path as ``normlight fit`` into the MLflow experiment ``quickstart``, then prints a
comparison table (each norm with the options the plan gives it), what each family's numbers are (the
plan's ``what``), and the command that opens the runs in the MLflow UI.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch
import yaml

from normlight.cli import train
from normlight.errors import NormlightError
from normlight.tracking import results
from normlight.tracking.credentials import redact
from normlight.tracking.mlflow_utils import default_tracking_uri
from normlight.tracking.ui import ui_link

DEFAULT_PLAN = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "log_every_n_steps": 10,
    "default_root_dir": "runs",
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


def load_plan(path: Path) -> dict:
    """The quickstart plan: ``experiment`` and ``runs`` (each ``name``, ``norms``, ``config``, optional ``what``)."""
    if not path.is_file():
        raise NormlightError(f"quickstart plan {path} not found; run from a normlight source checkout or pass --config")
    plan = yaml.safe_load(path.read_text())
    if not isinstance(plan, dict) or not plan.get("runs"):
        raise NormlightError(f"quickstart plan {path} needs a 'runs' list of {{name, norms, config}}")
    return plan


def norm_choice(item: str | dict) -> tuple[str, dict]:
    """A ``norms`` item: ``"rmsnorm"`` or ``{norm: groupnorm, norm_kwargs: {num_groups: 8}}``."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and isinstance(item.get("norm"), str):
        return item["norm"], dict(item.get("norm_kwargs") or {})
    raise NormlightError(
        f"quickstart plan: a norms item must be a name or {{norm: NAME, norm_kwargs: {{...}}}}, got {item!r}"
    )


def norm_label(item: str | dict) -> str:
    """A ``norms`` item as shown in the table: the name and its options (``dyt alpha_init=auto``)."""
    name, kwargs = norm_choice(item)
    return " ".join([name, *(f"{k}={v}" for k, v in kwargs.items())])


def run_config(entry: dict, norm: str | dict, experiment: str, tracking_uri: str | None) -> dict:
    """The full LightningCLI config of one quickstart run."""
    cfg = yaml.safe_load(yaml.safe_dump(entry["config"]))  # deep copy
    name, kwargs = norm_choice(norm)
    cfg["model"]["init_args"]["norm"] = name
    if kwargs:
        cfg["model"]["init_args"]["norm_kwargs"] = kwargs
    logger_args = {"experiment_name": experiment}
    if tracking_uri:
        logger_args["tracking_uri"] = tracking_uri
    cfg["trainer"] = {
        **TRAINER,
        **cfg.get("trainer", {}),
        "logger": {"class_path": "normlight.tracking.mlflow_utils.MLFlowLogger", "init_args": logger_args},
    }
    return cfg


def print_table(
    rows: list[dict],
    wall: dict[str, float],
    tracking_uri: str,
    experiment: str,
    labels: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
    experiment_id: str | None = None,
) -> None:
    """A rich comparison table, what each family's numbers are (``notes``), the UI command and the link that
    opens these runs."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"normlight quickstart: experiment '{experiment}'")
    for col in ("family", "norm", "final val metric", "val loss", "params", "throughput", "wall s", "status"):
        table.add_column(col, justify="right" if col not in ("family", "norm", "status") else "left")
    for r in rows:
        v = r["value"]
        shown = "-" if v is None else (f"ppl {v:.2f}" if r["metric"] == "val/ppl" else f"acc {100 * v:.1f}%")
        table.add_row(
            r["family"],
            (labels or {}).get(r["run"], r["norm"]),
            shown,
            "-" if r["val_loss"] is None else f"{r['val_loss']:.3f}",
            f"{r['params']:,}",
            f"{r['throughput']:,.0f} {r['unit']}/s",
            f"{wall.get(r['run'], 0):.0f}",
            "diverged" if r["diverged"] else r["status"].lower(),
        )
    console = Console(width=120)
    console.print(table)
    for name, what in (notes or {}).items():
        print(f"{name}: {what}", flush=True)
    # plain print: a long store path must stay one copy-pasteable line
    link = ui_link(experiment_id, view=True) if experiment_id else ui_link()
    print(
        f"Open these runs in the MLflow UI:\n  normlight ui --tracking-uri {redact(tracking_uri)}\nthen browse\n  {link}",
        flush=True,
    )


def train_all(
    plan: dict, experiment: str, tracking_uri: str | None, client, verbose: bool = False
) -> tuple[list[str], dict[str, float], dict[str, str]]:
    """Train every (family, norm) of the plan in this process; the run ids, wall seconds and norm labels per run name."""
    run_ids, wall, labels = [], {}, {}
    total = sum(len(e["norms"]) for e in plan["runs"])
    with tempfile.TemporaryDirectory() as d:
        for entry in plan["runs"]:
            for norm in entry["norms"]:
                name = norm_choice(norm)[0]
                cfg_path = Path(d) / f"{entry['name']}-{name}.yaml"
                cfg_path.write_text(yaml.safe_dump(run_config(entry, norm, experiment, tracking_uri)))
                print(f"[{len(run_ids) + 1}/{total}] {entry['name']} with {name} ...", flush=True)
                t0 = time.perf_counter()
                rc = train.main(["fit", "--config", str(cfg_path), *(["--verbose"] if verbose else [])])
                if rc in train.EXIT_CODES.values():  # Ctrl-C / SIGTERM stop the quickstart, not just this run
                    raise SystemExit(rc)
                run_id, run_name = results.latest_run(client, experiment)
                run_ids.append(run_id)
                wall[run_name] = time.perf_counter() - t0
                labels[run_name] = norm_label(norm)
    return run_ids, wall, labels


def write_results(path: Path, rows: list[dict], wall: dict[str, float], labels: dict[str, str], total_s: float) -> None:
    """The comparison as a markdown file (the README quotes its numbers from it): one row per run."""
    lines = [
        "# Quickstart results",
        "",
        f"Written by `normlight quickstart --results {path}` (what `make quickstart` trains): {len(rows)} runs in "
        f"{total_s:.0f} s wall, torch {torch.__version__}, one intra-op thread per run.",
        "",
        "| family | norm | final val metric | val loss | params | throughput | wall s | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v = r["value"]
        shown = "-" if v is None else (f"ppl {v:.2f}" if r["metric"] == "val/ppl" else f"acc {100 * v:.1f}%")
        loss = "-" if r["val_loss"] is None else f"{r['val_loss']:.3f}"
        status = "diverged" if r["diverged"] else r["status"].lower()
        lines.append(
            f"| {r['family']} | {labels.get(r['run'], r['norm'])} | {shown} | {loss} | {r['params']:,} | "
            f"{r['throughput']:,.0f} {r['unit']}/s | {wall.get(r['run'], 0):.0f} | {status} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    """Train the plan's runs in-process, then print the table. Returns 0 if every run finished."""
    p = argparse.ArgumentParser(prog="normlight quickstart", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", type=Path, default=DEFAULT_PLAN, help="quickstart plan YAML (default: configs/quickstart.yaml)"
    )
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--verbose", action="store_true", help="keep Lightning's and MLflow's full console output")
    p.add_argument("--results", type=Path, default=None, help="also write the comparison as markdown to this file")
    args = p.parse_args(argv[1:] if argv and argv[0] == "quickstart" else argv)
    plan = load_plan(args.config)
    experiment = plan.get("experiment", "quickstart")

    tracking_uri = args.tracking_uri or default_tracking_uri()
    for name in ("lightning.pytorch", "lightning.fabric", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    client = results.client(tracking_uri)
    # These models are tiny: intra-op threads barely help them, and on a busy machine spinning OpenMP threads
    # make a step 10x slower. One thread keeps the quickstart's time predictable.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        # Both the training runs and the reader use the same resolved store, whatever the working directory.
        run_ids, wall, labels = train_all(plan, experiment, tracking_uri, client, args.verbose)
    finally:
        torch.set_num_threads(threads)
    rows = results.run_rows(client, run_ids)
    notes = {e["name"]: e["what"] for e in plan["runs"] if e.get("what")}
    exp = client.get_experiment_by_name(experiment)
    print_table(rows, wall, tracking_uri, experiment, labels, notes, exp.experiment_id if exp else None)
    total = time.perf_counter() - start
    if args.results:
        write_results(args.results, rows, wall, labels, total)
    print(f"quickstart: {len(rows)} runs in {total:.0f} s", flush=True)
    return 0 if all(r["status"] == "FINISHED" for r in rows) else 1
