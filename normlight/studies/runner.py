"""Run a study: its sweeps through ``normlight.sweep.local.run_sweep``, its runs read back as RunRecords,
``measure()``, ``analyze()``, then the report and the ``study/<name>`` MLflow run (``normlight.studies.report``).

Every sweep of a study goes to ONE experiment per study and scale, ``study-<name>-<scale>``, so smoke runs never
mix with cpu runs, and resuming works as for ``normlight sweep``: rerunning a study skips finished grid points.
The sweep specs a study returns are written as ordinary sweep files under ``runs/studies/<name>/<scale>/``
(validated by ``normlight.sweep.spec.load_sweep``), so each one can also be run or dry-run by hand.
"""

from __future__ import annotations

import copy
import inspect
import time
from pathlib import Path

import yaml

from normlight.errors import NormlightError
from normlight.studies.base import SCALES, Study
from normlight.studies.store import experiment_name
from normlight.sweep.local import run_sweep
from normlight.sweep.spec import Sweep, load_sweep


class StudyError(NormlightError):
    """A study that cannot be run as asked (bad scale or seeds, a broken sweep spec); the message names it."""


def check(study: Study, scale: str, seeds: int | None) -> int:
    """Validate scale and seeds before anything runs; returns the number of seeds to use."""
    if scale not in SCALES:
        raise StudyError(f"unknown scale {scale!r} for study {study.name!r}; choose one of {', '.join(SCALES)}")
    n = seeds if seeds is not None else int(study.default_seeds.get(scale, 3))
    if n < 1:
        raise StudyError(f"--seeds must be >= 1, got {n}")
    return n


def _module_dir(study: Study) -> Path:
    return Path(inspect.getfile(type(study))).resolve().parent


def build_sweeps(study: Study, scale: str, seeds: int, workdir: str | Path) -> list[Sweep]:
    """The study's sweep specs as validated :class:`Sweep` objects (sweep files written under ``workdir``)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sweeps, names = [], set()
    for i, raw in enumerate(study.sweeps(scale, seeds)):
        spec = copy.deepcopy(dict(raw))
        spec["name"] = str(spec.get("name") or f"{study.name}-{i}")
        if spec["name"] in names:
            raise StudyError(f"study {study.name!r} returns two sweeps named {spec['name']!r}")
        names.add(spec["name"])
        spec["experiment"] = experiment_name(study, scale)
        base = Path(str(spec.get("base", "")))
        if spec.get("base") and not base.is_absolute():
            spec["base"] = str((_module_dir(study) / base).resolve())
        path = workdir / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        try:
            sweeps.append(load_sweep(path))
        except NormlightError as e:
            raise StudyError(f"study {study.name!r}, sweep {spec['name']!r}: {e}") from None
    return sweeps


def run_study(
    study: Study,
    scale: str = "cpu",
    seeds: int | None = None,
    *,
    tracking_uri: str,
    workers: int = 1,
    out: str | Path = "docs/studies",
    work_dir: str | Path = "runs/studies",
    retry_failed: bool = False,
    dry_run: bool = False,
) -> int:
    """Run a study end to end (see module docstring); returns an exit code (0 when every grid point finished)."""
    from normlight.studies import report

    n = check(study, scale, seeds)
    t0 = time.time()
    root = Path(work_dir) / study.name / scale
    sweeps = build_sweeps(study, scale, n, root)
    rc = 0
    for sweep in sweeps:
        code = run_sweep(
            sweep,
            tracking_uri,
            workers=workers,
            retry_failed=retry_failed,
            log_dir=root / "logs" / sweep.name,
            dry_run=dry_run,
        )
        if code >= 128:  # interrupted: stop here; what finished is kept and a rerun resumes
            return code
        rc = rc or code
    if dry_run:
        return 0
    report.build(study, scale, n, sweeps, tracking_uri, out, wall_seconds=time.time() - t0, measure=True)
    return rc


def report_study(
    study: Study,
    scale: str = "cpu",
    seeds: int | None = None,
    *,
    tracking_uri: str,
    out: str | Path = "docs/studies",
    work_dir: str | Path = "runs/studies",
) -> int:
    """Rebuild a study's report from what the store holds (partial results say what is missing)."""
    from normlight.studies import report

    n = check(study, scale, seeds)
    sweeps = build_sweeps(study, scale, n, Path(work_dir) / study.name / scale)
    report.build(study, scale, n, sweeps, tracking_uri, out, wall_seconds=None, measure=True)
    return 0
