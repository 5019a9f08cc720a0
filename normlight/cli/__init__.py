"""The ``normlight`` command: the only place that wires the package's parts together.

One module per command, each with ``main(argv) -> int`` (litgpt's command folders): ``train`` (fit,
validate, test, predict through LightningCLI), ``quickstart``, ``sweep``, ``compare``, ``analyze``, ``ui`` and
``plugins`` (list, new). A command's module is imported only when it runs. Nothing below ``cli``
imports from it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from normlight import __version__
from normlight.errors import NormlightError

# command -> (module with main(argv), one-line help); fit/validate/test/predict go to LightningCLI
COMMANDS = {
    "fit": ("normlight.cli.train", "train a model from a YAML config (LightningCLI)"),
    "validate": ("normlight.cli.train", "validate a model (LightningCLI)"),
    "test": ("normlight.cli.train", "test a model (LightningCLI)"),
    "predict": ("normlight.cli.train", "predict with a model (LightningCLI)"),
    "sweep": ("normlight.cli.sweep", "run a grid of configs into one MLflow experiment"),
    "compare": ("normlight.cli.compare", "tables and plots comparing the runs of an experiment"),
    "analyze": ("normlight.cli.analyze", "layer analysis of a trained model: redundancy, removable depth, profiles"),
    "ui": ("normlight.cli.ui", "start the MLflow UI on this project's store"),
    "quickstart": ("normlight.cli.quickstart", "train a small GPT + ViT + ResNet norm comparison"),
    "plugins": ("normlight.cli.plugins", "list installed norm, placement and model plugins; scaffold new ones"),
    "study": ("normlight.cli.study", "reproduce a paper's claim: list, run and report studies (docs/studies/)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level argument parser (each subcommand parses its own arguments)."""
    parser = argparse.ArgumentParser(
        prog="normlight",
        description="Study normalization in GPT, ViT and ResNet: pluggable norms and placements, "
        "LightningCLI training, MLflow tracking.",
    )
    parser.add_argument("--version", action="version", version=f"normlight {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
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
        build_parser().parse_args(argv)  # --help, --version, or a usage error
        build_parser().print_help()
        return 0
    except NormlightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
