"""Optional engines (submitit, Ray, Optuna, psycopg2) come from extras; a missing one is one clear error."""

from __future__ import annotations

import importlib

from normlight.sweep.spec import SweepError

# import name -> (extra, what needs it)
EXTRAS = {
    "submitit": ("slurm", "--launcher slurm"),
    "ray": ("ray", "--launcher ray"),
    "optuna": ("optuna", "--search optuna"),
    "psycopg2": ("postgres", "a postgresql:// tracking store"),
}


def require(module: str):
    """Import ``module`` or raise SweepError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra, needed_by = EXTRAS[module]
        raise SweepError(f"{needed_by} needs the {module!r} package: pip install 'normlight[{extra}]'") from None
