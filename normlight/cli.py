"""The ``normlight`` command: the only place that wires the package's parts together.

Subcommands are thin: each lives in its own module with ``main(argv) -> int`` and is imported only
when used, so ``normlight --help`` and ``normlight plugins list`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from normlight import __version__, plugins, registry
from normlight.errors import NormlightError

# command -> (module with main(argv), one-line help); fit/validate/test/predict go to LightningCLI
COMMANDS = {
    "fit": ("normlight.training_cli", "train a model from a YAML config (LightningCLI)"),
    "validate": ("normlight.training_cli", "validate a model (LightningCLI)"),
    "test": ("normlight.training_cli", "test a model (LightningCLI)"),
    "predict": ("normlight.training_cli", "predict with a model (LightningCLI)"),
    "sweep": ("normlight.sweep", "run a grid of configs into one MLflow experiment"),
    "compare": ("normlight.tracking.compare", "tables and plots comparing the runs of an experiment"),
    "ui": ("normlight.tracking.ui", "start the MLflow UI on this project's store"),
    "quickstart": ("normlight.quickstart", "train a small GPT + ViT + ResNet norm comparison"),
}


def _plugin_rows(kind: str | None, load: bool) -> list[dict]:
    rows = []
    for k in [kind] if kind else list(plugins.GROUPS):
        pool = plugins.entries(k)
        for e in pool:
            if load:
                try:
                    e.load()
                except NormlightError:
                    pass  # recorded on the entry as broken; shown below
            twins = [o for o in pool if o is not e and registry.normalize_name(o.name) == registry.normalize_name(e.name)]
            obj = e.obj if e.loaded else None
            doc = (getattr(obj, "description", None) or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]) if obj else ""
            rows.append({
                "kind": k[:-1], "name": e.name, "distribution": e.dist, "version": e.version,
                "entry_point": e.value, "status": e.status, "error": e.error,
                "description": doc, "paper": getattr(obj, "paper", "") if obj else "",
                "duplicate_of": [o.qualified for o in twins],
            })
    return rows


def plugins_list(args: argparse.Namespace) -> int:
    """Print the catalog of norms, placements and models with their distributions."""
    rows = _plugin_rows(args.kind, args.load)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"normlight {__version__} plugins" + ("" if args.load else " (not imported; --load checks each)"))
    for col in ("kind", "name", "distribution", "status", "description / problem"):
        table.add_column(col, overflow="fold")
    for r in rows:
        note = f"{r['error']} (entry point {r['entry_point']})" if r["error"] else " ".join(x for x in (r["description"], f"[{r['paper']}]" if r["paper"] else "") if x)
        if r["duplicate_of"]:
            note += f" (name also registered by {', '.join(r['duplicate_of'])}; select as {r['distribution']}:{r['name']})"
        style = "red" if r["status"] == "broken" else None
        # plugin text is data, not markup: "[lowercase ...]" would otherwise vanish
        table.add_row(r["kind"], r["name"], f"{r['distribution']} {r['version']}", r["status"], escape(note), style=style)
    Console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The top-level argument parser (subcommands other than ``plugins`` parse their own arguments)."""
    parser = argparse.ArgumentParser(
        prog="normlight",
        description="Study normalization in GPT, ViT and ResNet: pluggable norms and placements, "
        "LightningCLI training, MLflow tracking.",
    )
    parser.add_argument("--version", action="version", version=f"normlight {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    p = sub.add_parser("plugins", help="list installed norm, placement and model plugins; scaffold new ones")
    psub = p.add_subparsers(dest="plugins_command", metavar="ACTION", required=True)
    pl = psub.add_parser("list", help="list plugins with their distributions and status")
    pl.add_argument("--kind", choices=[k for k in plugins.GROUPS], help="only this kind")
    pl.add_argument("--json", action="store_true", help="machine-readable output")
    pl.add_argument("--load", action="store_true", help="import each plugin to check it and show its description")
    pl.set_defaults(func=plugins_list)
    pn = psub.add_parser("new", help="scaffold a plugin package (see docs/plugins.md)", add_help=False)
    pn.set_defaults(module="normlight.scaffold")
    return parser


def _run_module(module: str, argv: list[str], command: str) -> int:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            print(f"normlight {command}: not available in this version ({module} is missing)", file=sys.stderr)
            return 2
        raise
    return int(mod.main(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``normlight`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            return _run_module(COMMANDS[argv[0]][0], argv, argv[0])
        if argv[:2] == ["plugins", "new"]:
            return _run_module("normlight.scaffold", argv[2:], "plugins new")
        args = build_parser().parse_args(argv)
        if not getattr(args, "func", None):
            build_parser().print_help()
            return 0
        return args.func(args)
    except NormlightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
