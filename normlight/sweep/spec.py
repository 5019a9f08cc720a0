"""Sweep files: a grid of configs, each run as its own ``normlight fit`` process, into ONE MLflow experiment.

A sweep file::

    name: placement_lr                 # optional; default = file stem; tags every run (``sweep``)
    experiment: placement-lr           # the MLflow experiment all runs go to
    base: configs/gpt/tiny.yaml        # a full config (relative to this file, or to the working directory)
    grid:                              # cartesian product over any config keys
      model.placement: [post, pre, peri]
      model.lr: [1.0e-3, 3.0e-3]
      seed_everything: [0, 1]
    fixed:                             # overrides applied to every run
      trainer.max_steps: 300
    resources:                         # optional: what ONE run needs on a cluster (--launcher slurm|ray)
      gpus_per_task: 1
      cpus_per_task: 4
      time_min: 60
      partition: gpu

A grid axis may also bundle several keys that only make sense together: its name is a plain word and
its values are mappings (an optional ``label`` names the value; the run is tagged ``<axis>=<label>``)::

    grid:
      norm_setup:
        - {label: gn+ws, model.norm: groupnorm, model.model_kwargs: {weight_standardization: true}}
        - {label: nf, model.norm: null, model.model_kwargs: {variant: nf}}

Every run is ``normlight fit --config BASE --key value ...`` in a subprocess, so a crash or a
divergence stays isolated. A run's identity is a hash of the base config text plus its overrides
(tag ``sweep_hash``): a finished run with that hash is skipped and never overwritten, a failed one is
re-run only with ``--retry-failed``, an interrupted one (killed sweep) is re-run. ``--dry-run``
prints one shell command per pending run; ``--launcher slurm|ray`` submits them as a SLURM job array or Ray
tasks, with the ``resources:`` of one run (``slurm.py``, ``ray_tasks.py``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from normlight.errors import NormlightError
from normlight.tracking.sweep_runs import HASH_TAG, SWEEP_TAG

KEYS = {"name", "experiment", "base", "grid", "fixed", "description", "resources"}
# per-run resources for the cluster launchers (slurm, ray): name -> type
RESOURCES = {
    "nodes": int,
    "gpus_per_task": int,
    "cpus_per_task": int,
    "mem_gb": float,
    "time_min": int,
    "partition": str,
    "account": str,
}
TOP_LEVEL = {"model", "data", "trainer", "seed_everything", "diagnostics", "optimizer", "lr_scheduler", "ckpt_path"}
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
LOGGER = "trainer.logger.init_args"


class SweepError(NormlightError):
    """A sweep file that cannot be run; the message names the file and the field at fault."""


@dataclass
class Sweep:
    """A validated sweep file."""

    path: Path
    name: str
    experiment: str
    base: Path
    grid: dict[str, list]
    fixed: dict[str, object] = field(default_factory=dict)
    description: str = ""
    resources: dict[str, object] = field(default_factory=dict)

    def points(self) -> list[tuple[dict, dict]]:
        """The cartesian product of the grid in file order (last axis varies fastest), as
        (overrides {config key: value}, labels {axis or key: display value}) per point."""
        keys = list(self.grid)
        out = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            overrides, labels = {}, {}
            for key, value in zip(keys, combo):
                if isinstance(value, dict):  # a bundle axis
                    overrides.update({k: v for k, v in value.items() if k != "label"})
                    labels[key] = str(
                        value.get("label") or "+".join(cli_value(v) for k, v in value.items() if k != "label")
                    )
                else:
                    overrides[key] = value
                    labels[key] = value
            out.append((overrides, labels))
        return out


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and validate a sweep YAML (see module docstring); raises SweepError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {sorted(KEYS)}")
    unknown = set(raw) - KEYS
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(KEYS)}")
    for key in ("experiment", "base", "grid"):
        if key not in raw:
            raise SweepError(f"{path}: missing required key {key!r}")
    if not isinstance(raw["experiment"], str) or not raw["experiment"].strip():
        raise SweepError(f"{path}: 'experiment' must be a non-empty string")
    grid, fixed = raw["grid"], raw.get("fixed") or {}
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"{path}: 'grid' must be a non-empty mapping of config key -> list of values")
    if not isinstance(fixed, dict):
        raise SweepError(f"{path}: 'fixed' must be a mapping of config key -> value")
    owner: dict[str, str] = {}  # config key -> the grid axis that sets it
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid.{key} must be a non-empty list of values, got {values!r}")
        bundles = [v for v in values if isinstance(v, dict)]
        if bundles and len(bundles) != len(values):
            raise SweepError(f"{path}: grid.{key} mixes mappings and plain values; use one or the other")
        if not bundles:
            _check_key(path, "grid", key)
            owner[key] = key
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)) or key in TOP_LEVEL:
            raise SweepError(
                f"{path}: grid axis {key!r} bundles several keys, so its name must be a plain word "
                f"(not a config key such as {sorted(TOP_LEVEL)})"
            )
        for value in bundles:
            for sub in value:
                if sub == "label":
                    continue
                _check_key(path, f"grid.{key}", sub)
                if owner.get(sub, key) != key:
                    raise SweepError(f"{path}: {sub!r} is set by both grid.{owner[sub]} and grid.{key}")
                owner[sub] = key
    for key in fixed:
        _check_key(path, "fixed", key)
        if key in owner:
            raise SweepError(f"{path}: {key!r} is both in 'grid' and in 'fixed'")
    resources = check_resources(raw.get("resources") or {}, f"{path}: resources")
    name = str(raw.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SweepError(f"{path}: name {name!r} may only use letters, digits, '_', '.', '-'")
    return Sweep(
        path,
        name,
        raw["experiment"].strip(),
        _resolve_base(path, raw["base"]),
        grid,
        fixed,
        str(raw.get("description") or ""),
        resources,
    )


def check_resources(resources, where: str) -> dict:
    """Validate per-run resources (see ``RESOURCES``); raises SweepError naming ``where`` and the key at fault."""
    if not isinstance(resources, dict):
        raise SweepError(f"{where} must be a mapping with keys from {sorted(RESOURCES)}")
    out = {}
    for key, value in resources.items():
        kind = RESOURCES.get(key)
        if kind is None:
            raise SweepError(f"{where}: unknown key {key!r}; allowed: {sorted(RESOURCES)}")
        if value is None:
            continue
        if kind is str:
            if not isinstance(value, str) or not value:
                raise SweepError(f"{where}: {key} must be a non-empty string, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < (1 if kind is int else 0):
            raise SweepError(f"{where}: {key} must be a positive number, got {value!r}")
        elif kind is int and value != int(value):
            raise SweepError(f"{where}: {key} must be a whole number, got {value!r}")
        out[key] = kind(value)
    return out


def _check_key(path: Path, section: str, key) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise SweepError(f"{path}: {section} key {key!r} is not a dotted config key like 'model.norm'")
    if key.split(".")[0] not in TOP_LEVEL:
        raise SweepError(f"{path}: {section} key {key!r} must start with one of {sorted(TOP_LEVEL)}")
    if key.startswith(LOGGER) and key.split(".")[-1] in ("run_id", "tags", "experiment_name", "tracking_uri"):
        raise SweepError(f"{path}: {section} key {key!r} is set by the sweep itself")


def _resolve_base(sweep_path: Path, base) -> Path:
    if not isinstance(base, str) or not base:
        raise SweepError(f"{sweep_path}: 'base' must be the path of a config YAML")
    tried = [Path(base)] if Path(base).is_absolute() else [sweep_path.parent / base, Path.cwd() / base]
    for p in tried:
        if p.is_file():
            return p.resolve()
    raise SweepError(f"{sweep_path}: base config {base!r} not found (looked at {', '.join(map(str, tried))})")


# ---------------------------------------------------------------------------------------------- runs
def cli_value(value) -> str:
    """How a YAML value is written on the LightningCLI command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def config_hash(base_text: str, overrides: dict) -> str:
    """12 hex digits identifying (base config text, overrides); key order does not matter."""
    blob = json.dumps({"base": base_text, "overrides": overrides}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_name(sweep: Sweep, labels: dict) -> str:
    """Readable run name: the sweep name and the grid values (``placement_lr/post/lr=0.001/s0``)."""
    parts = [sweep.name]
    for key, value in labels.items():
        leaf = key.split(".")[-1]
        if leaf in ("norm", "placement", "model") or ("." not in key and leaf != "seed_everything"):
            parts.append(str(value))
        elif leaf == "seed_everything":
            parts.append(f"s{value}")
        else:
            parts.append(f"{leaf}={cli_value(value)}")
    return "/".join(parts)


@dataclass
class Run:
    """One grid point: its overrides, identity and command."""

    labels: dict
    overrides: dict
    hash: str
    name: str
    tags: dict

    def args(self, sweep: Sweep, tracking_uri: str) -> list[str]:
        """Arguments after ``normlight``: ``fit --config BASE --key value ...`` plus the logger wiring."""
        args = ["fit", "--config", _display_path(sweep.base)]
        for key, value in self.overrides.items():
            args += [f"--{key}", cli_value(value)]
        args += [
            f"--{LOGGER}.experiment_name",
            sweep.experiment,
            f"--{LOGGER}.tracking_uri",
            tracking_uri,
            f"--{LOGGER}.run_name",
            self.name,
            f"--{LOGGER}.tags",
            json.dumps(self.tags, separators=(",", ":")),
        ]
        return args


def _display_path(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def plan(sweep: Sweep) -> list[Run]:
    """Every run of the sweep, with its hash and tags (``sweep``, ``sweep_hash`` and ``cfg.<key>`` per override)."""
    base_text = sweep.base.read_text()
    runs, seen = [], set()
    for point, labels in sweep.points():
        overrides = {**sweep.fixed, **point}
        h = config_hash(base_text, overrides)
        if h in seen:
            raise SweepError(f"{sweep.path}: the grid repeats a value (two runs with identical config {labels})")
        seen.add(h)
        tags = {
            SWEEP_TAG: sweep.name,
            HASH_TAG: h,
            **{f"cfg.{k}": cli_value(v) for k, v in overrides.items()},
            **{k: str(v) for k, v in labels.items() if "." not in k and k not in TOP_LEVEL},
            "sweep_axes": ",".join(k for k in labels if k.split(".")[-1] not in ("seed_everything", "seed")),
        }
        runs.append(Run(labels, overrides, h, run_name(sweep, labels), tags))
    return runs
