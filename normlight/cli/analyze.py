"""``normlight analyze``: layer analysis of a trained model (redundancy, removable depth, per-layer profiles).

::

    normlight analyze --ckpt_path runs/checkpoints/quickstart/<run>/last.ckpt          # data from the run's config
    normlight analyze --ckpt_path CKPT --data '{class_path: PydocTextDataModule, init_args: {block_size: 64}}'
    normlight analyze --config configs/gpt/nano.yaml                                     # an untrained model
    normlight analyze --ckpt_path CKPT --analyses removal_curve --heal-steps 20 --batches 8

The model comes from a checkpoint (read with ``torch.load(weights_only=True)``) or a config; the evaluation data
from ``--data``, else the config's ``data:`` section, else the config the checkpoint's MLflow run was trained
with. Results go to ``runs/analyze/<run>/`` (summary.md, CSV tables, plots, analysis.json) and into the SAME
MLflow run as the training (or a linked ``analyze/...`` run when that run is not in the store).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import torch
import yaml

from normlight.analysis import AnalysisContext, as_layer_model, resolve_names, run_analyses, write_report
from normlight.analysis.layers import AnalysisInputError
from normlight.analysis.runner import check
from normlight.analysis.source import (
    build_data,
    data_spec,
    from_checkpoint,
    from_config,
    from_pretrained,
    read_config,
    take_batches,
)
from normlight.tracking import analysis_runs, sweep_runs
from normlight.tracking.credentials import redact
from normlight.tracking.mlflow_utils import default_tracking_uri


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``normlight analyze``."""
    p = argparse.ArgumentParser(
        prog="normlight analyze", description="Layer analysis of a trained model (see docs/analysis.md)."
    )
    p.add_argument("--ckpt_path", default=None, help="a checkpoint written by normlight fit")
    p.add_argument("--config", default=None, help="a training config (model built from it unless --ckpt_path; data)")
    p.add_argument(
        "--init_from",
        default=None,
        help="a pretrained model instead (hf:gpt2, nanogpt:ckpt.pt, timm:..., see docs/pretrained.md); needs --data",
    )
    p.add_argument(
        "--data",
        default=None,
        help="evaluation data: a DataModule class name, a YAML mapping {class_path, init_args} or a YAML file",
    )
    p.add_argument("--analyses", default="all", help="comma-separated analyses (default all; see plugins list)")
    p.add_argument(
        "--options", default=None, help="per-analysis options as YAML, e.g. '{removal_curve: {scores: [bi, random]}}'"
    )
    p.add_argument("--batches", type=int, default=4, help="validation batches to evaluate on (default 4)")
    p.add_argument("--batch-size", type=int, default=None, help="evaluation batch size (default: the data's)")
    p.add_argument("--heal-steps", type=int, default=None, help="removal_curve: healing fine-tune steps per point")
    p.add_argument("--heal-lr", type=float, default=None, help="removal_curve: healing learning rate (default 1e-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of random removal orders and healing (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda if available, else cpu)")
    p.add_argument("--out", default=None, help="report folder (default runs/analyze/<run>)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument(
        "--log-to",
        choices=("same", "linked", "none"),
        default="same",
        help="same: into the checkpoint's training run if it is in the store, else a linked analyze/... run "
        "(default); linked: always a new analyze/... run; none: no MLflow",
    )
    p.add_argument("--experiment", default=None, help="experiment of a linked run (default: the training run's)")
    return p


def _options(args) -> dict:
    opts = {}
    if args.options:
        try:
            opts = yaml.safe_load(args.options)
        except yaml.YAMLError as exc:
            raise AnalysisInputError(f"--options is not valid YAML: {exc}") from None
        if not isinstance(opts, dict):
            raise AnalysisInputError(f"--options must be a mapping analysis -> options, got {args.options!r}")
    for flag, key in ((args.heal_steps, "heal_steps"), (args.heal_lr, "heal_lr")):
        if flag is not None:
            opts.setdefault("removal_curve", {})[key] = flag
    return opts


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def main(argv: list[str]) -> int:
    """Entry point of ``normlight analyze`` (argv[0] is ``analyze``)."""
    args = build_parser().parse_args(argv[1:] if argv and argv[0] == "analyze" else argv)
    if sum(bool(x) for x in (args.ckpt_path, args.init_from)) > 1 or not (
        args.ckpt_path or args.config or args.init_from
    ):
        raise AnalysisInputError(
            "normlight analyze needs one model: --ckpt_path (a trained model), --init_from (a pretrained model) "
            "or --config (a model to build)"
        )
    if args.batches < 1:
        raise AnalysisInputError(f"--batches must be >= 1, got {args.batches}")
    for name in ("lightning.pytorch", "lightning.fabric", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    names = resolve_names([n.strip() for n in args.analyses.split(",") if n.strip()])
    options = _options(args)
    check(names, options)  # unknown analyses and options fail here, before any loading
    cfg = read_config(args.config) if args.config else None
    if args.ckpt_path:
        source = from_checkpoint(args.ckpt_path)
    elif args.init_from:
        source = from_pretrained(args.init_from)
    else:
        source = from_config(cfg, args.config)
    uri = args.tracking_uri or default_tracking_uri()
    client = sweep_runs.client(uri) if args.log_to != "none" or not (args.data or cfg) else None
    run = analysis_runs.find_run(client, source.run_id) if client is not None else None

    # evaluation data: --data, else the config's data section, else the training run's config
    if args.data:
        where, spec = "--data", data_spec(args.data, "--data")
    elif cfg is not None and "data" in cfg:
        where, spec = args.config, data_spec(cfg["data"], args.config)
    else:
        trained = analysis_runs.training_config(client, run.info.run_id) if run is not None else None
        if not trained or "data" not in trained:
            raise AnalysisInputError(
                f"no evaluation data: the checkpoint's MLflow run {source.run_id} is not in {redact(uri)} or has no config; "
                "pass --data (a DataModule class name or {class_path, init_args}) or --config"
            )
        where, spec = f"MLflow run {run.info.run_id}", data_spec(trained["data"], "the training run's config")
    dm = build_data(*spec, eval_batch_size=args.batch_size)
    if source.task is not None:
        source.task.check_data(dm)
    batches = take_batches(dm.val_dataloader(), args.batches)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    layers = as_layer_model(source.model.to(device))
    ctx = AnalysisContext(layers, batches, train_batches=dm.train_dataloader, seed=args.seed)
    print(
        f"normlight analyze: {getattr(layers.model, 'spec', {}).get('name', type(layers.model).__name__)} "
        f"({layers.depth} blocks) on {len(ctx.batches)} batches of {spec[0]} ({where}); analyses: {', '.join(names)}",
        flush=True,
    )
    results = run_analyses(ctx, names, options)

    label = run.info.run_name if run is not None else Path(args.ckpt_path or args.init_from or args.config).stem
    step = f"-step{source.step}" if source.step is not None else ""
    out = Path(args.out or Path("runs") / "analyze" / f"{_slug(label)}{step}")
    spec_model = getattr(layers.model, "spec", {}) or {}
    meta = {
        "title": f"layer analysis of {label}{step.replace('-', ' ')}",
        "model": ", ".join(f"{k}={spec_model[k]}" for k in ("name", "norm", "placement", "depth") if k in spec_model),
        "checkpoint": args.ckpt_path or "(none: freshly initialized from the config)",
        "mlflow_run": source.run_id,
        "data": f"{spec[0]} {spec[1]} (from {where})",
        "batches": f"{len(ctx.batches)} x {tuple(ctx.batches[0][0].shape)}",
        "block_calls": ctx.block_calls,
        "cost": f"{ctx.block_calls / (layers.depth * len(ctx.batches)):.1f} full forward passes over these batches "
        "(+ healing steps)",
        "analyses": ", ".join(names),
        "options": options,
        "seed": args.seed,
    }
    files = write_report(results, out, meta)
    _print_summary(results, files, out)
    if args.log_to != "none":
        metrics = [m for r in results for m in r.metrics()]
        axes = {k: v for r in results for k, v in r.step_axes().items()}
        tags = {"analysis.analyses": ",".join(names), "analysis.data": spec[0], "analysis.batches": len(ctx.batches)}
        if source.step is not None:
            tags["analysis.ckpt_step"] = source.step
        if run is None or args.log_to == "linked":
            tags.update(source.task.run_tags() if source.task is not None else {})
        experiment = args.experiment or (
            client.get_experiment(run.info.experiment_id).name if run is not None else "analyze"
        )
        rid, same = analysis_runs.log_analysis(
            client,
            uri,
            run_id=source.run_id,
            into_source=args.log_to == "same",
            experiment=experiment,
            run_name=f"analyze/{label}",
            tags=tags,
            metrics=metrics,
            step_axes=axes,
            files=files,
        )
        where_logged = "its training run" if same else f"a linked run analyze/{label} (experiment {experiment!r})"
        print(f"logged to MLflow run {rid}: {where_logged}; browse with `normlight ui`", flush=True)
    return 0


def _print_summary(results, files, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    for res in results:
        table = Table(title=res.name, show_header=True)
        table.add_column("metric")
        table.add_column("value", justify="right")
        for k, v in res.scalars.items():
            table.add_row(k, f"{v:.4g}")
        for k, s in res.series.items():
            table.add_row(f"{k} (per {s.axis})", " ".join(f"{v:.3g}" for v in s.values))
        console.print(table)
    print(f"wrote {len(files)} files to {out} (summary.md, tables, plots)", file=sys.stdout, flush=True)
