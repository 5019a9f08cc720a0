"""``normlight sweep FILE --search optuna``: Optuna's TPE sampler over the sweep's grid, several machines at once.

The search space comes from the grid: the learning rate axis (``--lr-key``) becomes a log-uniform range
[min, max] of its values, every other axis a categorical choice of its values. Each trial is one ``normlight
fit`` run, recorded in MLflow like any sweep point (tags ``sweep``, ``sweep_hash``, ``optuna_trial``) and trained
through ``run_sweep`` with any launcher. Its objective is the run's final ``--metric`` (minimized; maximized for
accuracy-like metrics, as ``normlight compare`` does).

The study lives in Optuna's RDB storage next to the tracking store, so any number of drivers on any machines
cooperate on one study (each runs ``--trials`` trials; TPE sees everyone's results):

- ``postgresql://.../db`` store: the same database, in its own schema ``optuna`` (created on first use);
- ``sqlite:///path/mlflow.db`` store: ``sqlite:///path/mlflow.optuna.db`` beside it;
- a tracking server (``http://``): pass ``--optuna-storage`` (e.g. the server's PostgreSQL database).

Optuna and MLflow cannot share one schema: both keep their migration state in a table named
``alembic_version``. Diverging or hopeless runs are pruned while they train by
:class:`~normlight.sweep.optuna_pruning.OptunaPruning`, a Lightning callback added to each trial's trainer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

try:  # POSIX; elsewhere a new sqlite study is created without the lock (and retried)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

from normlight.sweep.extras import require
from normlight.sweep.optuna_pruning import PRUNED_ATTR
from normlight.sweep.spec import Sweep, SweepError, cli_value, plan
from normlight.tracking import sweep_runs
from normlight.tracking.compare import higher_is_better, stability_point
from normlight.tracking.credentials import redact

SCHEMA = "optuna"


def storage_url(tracking_uri: str, storage: str | None = None) -> str:
    """The Optuna RDB storage URL for a tracking store (see the module doc)."""
    if storage:
        return storage
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        return f"sqlite:///{db.with_name(db.stem + '.optuna.db')}"
    scheme = tracking_uri.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres", "postgresql+psycopg2"):
        rest = tracking_uri.split("://", 1)[1]
        sep = "&" if "?" in rest else "?"
        return f"postgresql+psycopg2://{rest}{sep}options=-csearch_path%3D{SCHEMA}"
    raise SweepError(
        f"--search optuna with tracking store {redact(tracking_uri)}: pass --optuna-storage URL (an RDB all drivers "
        "reach, e.g. the tracking server's PostgreSQL database)"
    )


def _ensure_schema(url: str) -> None:
    """Create the ``optuna`` schema of a PostgreSQL storage (Optuna creates its tables, not schemas)."""
    if "search_path%3D" not in url:
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url.split("?")[0])
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    engine.dispose()


def _open_study(optuna, url: str, **kwargs):
    """``optuna.create_study`` that N drivers may call at once on a new storage: Optuna creates its tables without
    a lock (two racing drivers collide on ``alembic_version``), so a new sqlite file is created under a file lock
    beside it, and any storage is retried a few times."""
    lock = None
    if url.startswith("sqlite:///") and fcntl is not None:
        lock = open(url[len("sqlite:///") :] + ".lock", "a")
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    try:
        for attempt in range(5):
            try:
                return optuna.create_study(storage=url, **kwargs)
            except Exception:  # noqa: BLE001 - a concurrent schema creation; the next attempt finds the tables
                if attempt == 4:
                    raise
                time.sleep(1.0 + attempt)
    finally:
        if lock is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
            lock.close()


def space(sweep: Sweep, lr_key: str) -> dict[str, tuple]:
    """{axis: ("log", lo, hi) | ("choice", [labels], [values])} from the grid."""
    out = {}
    for key, values in sweep.grid.items():
        if key == lr_key and len(values) >= 2 and all(isinstance(v, (int, float)) and v > 0 for v in values):
            out[key] = ("log", float(min(values)), float(max(values)))
        else:
            labels = [str(v.get("label", i)) if isinstance(v, dict) else cli_value(v) for i, v in enumerate(values)]
            out[key] = ("choice", labels, list(values))
    return out


def suggest(trial, dims: dict[str, tuple]) -> dict:
    """One point of the space from ``trial`` ({axis: value}, values as the grid writes them)."""
    point = {}
    for key, dim in dims.items():
        if dim[0] == "log":
            point[key] = float(f"{trial.suggest_float(key, dim[1], dim[2], log=True):.4g}")
        else:
            label = trial.suggest_categorical(key, dim[1])
            point[key] = dim[2][dim[1].index(label)]
    return point


def optuna_search(
    sweep: Sweep,
    uri: str,
    *,
    trials: int = 20,
    metric: str = "val/loss",
    storage: str | None = None,
    lr_key: str = "model.lr",
    seed: int | None = None,
    **run_kwargs,
) -> int:
    """Run ``trials`` trials of the sweep's study (see the module doc); returns the exit code."""
    optuna = require("optuna")
    from normlight.sweep.local import run_sweep

    if trials < 1:
        raise SweepError("--trials must be >= 1")
    url = storage_url(uri, storage)
    _ensure_schema(url)
    maximize = higher_is_better(metric)
    study = _open_study(
        optuna,
        url,
        study_name=f"normlight/{sweep.name}",
        load_if_exists=True,
        direction="maximize" if maximize else "minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    dims = space(sweep, lr_key)
    c = sweep_runs.client(uri)
    print(f"[optuna] study {study.study_name!r} in {redact(url)}: {len(study.trials)} trials so far", flush=True)
    code = 0
    for _ in range(trials):
        trial = study.ask()
        point = suggest(trial, dims)
        (run,) = plan(dataclasses.replace(sweep, grid={k: [v] for k, v in point.items()}))
        run.tags["optuna_trial"] = str(trial.number)
        callback = {
            "class_path": "normlight.sweep.optuna_pruning.OptunaPruning",
            "init_args": {
                "storage": url,
                "study_name": study.study_name,
                "trial_number": trial.number,
                "monitor": metric,
            },
        }
        extra = ["--trainer.callbacks+=" + json.dumps(callback, separators=(",", ":"))]
        rc = run_sweep(sweep, uri, runs=[run], fit_args=extra, **run_kwargs)
        if rc not in (0, 1):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return rc
        exp = c.get_experiment_by_name(sweep.experiment)
        done = [
            r
            for r in sweep_runs.sweep_runs(c, exp.experiment_id, sweep.name)
            if r.data.tags.get(sweep_runs.HASH_TAG) == run.hash and r.info.status == "FINISHED"
        ]
        attrs = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number).user_attrs
        diverged, value = stability_point(done[0], metric) if done else (False, None)
        if PRUNED_ATTR in attrs or diverged:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            outcome = f"pruned at step {attrs.get(PRUNED_ATTR, '?')} ({attrs.get('pruned_because', 'diverged')})"
        elif value is None or not math.isfinite(value):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            outcome, code = "failed (no final metric)", 1
        else:
            study.tell(trial, value)
            outcome = f"{metric} = {value:.4g}"
        print(f"[optuna] trial {trial.number}: {run.name}: {outcome}", flush=True)
    done_trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if done_trials:
        best = study.best_trial
        print(f"[optuna] best of {len(done_trials)} complete trials: {best.params} -> {metric} = {best.value:.4g}")
    return code
