"""Sweeps: a grid of configs (``spec``) run as isolated ``normlight fit`` processes (``local``)."""

from normlight.sweep.local import run_sweep
from normlight.sweep.spec import Run, Sweep, SweepError, config_hash, load_sweep, plan

__all__ = ["Run", "Sweep", "SweepError", "config_hash", "load_sweep", "plan", "run_sweep"]
