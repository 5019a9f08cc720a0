"""``normlight sweep FILE --launcher ray``: one Ray task per pending grid point.

Each task runs a :class:`~normlight.sweep.task.PointTask` (claim the point in the tracking store, train it with
``normlight fit``, release it), with the run's ``num_cpus`` / ``num_gpus`` as the task's Ray resources, so Ray
places it on a node that has them. At most ``workers`` tasks are in flight at once (the rest wait in the
driver, not in Ray's queue, so a second driver can take them). A task whose worker or node dies is retried by
Ray once (``max_retries=1``); its claim, no longer refreshed, is taken over when stale, and a task that finds its
point running under a live owner exits without training. Failed runs are re-run only with ``--retry-failed``.

``address`` is ``ray.init``'s: ``None`` starts a local instance, ``"auto"`` or ``ray://host:10001`` joins a
cluster (every node needs normlight installed and the tracking store reachable).
"""

from __future__ import annotations

from pathlib import Path

from normlight.sweep.extras import require
from normlight.sweep.spec import Run, Sweep
from normlight.sweep.task import PointTask


def _run_point(task: PointTask) -> str:
    return task()


def resources_of(resources: dict) -> dict:
    """Ray task options for per-run ``resources`` (``num_cpus`` defaults to 1, ``num_gpus`` to 0)."""
    return {
        "num_cpus": float(resources.get("cpus_per_task") or 1),
        "num_gpus": float(resources.get("gpus_per_task") or 0),
        **({"memory": int(resources["mem_gb"] * 2**30)} if resources.get("mem_gb") else {}),
    }


def ensure_ray(address: str | None = None, num_cpus: int | None = None):
    """``ray`` initialized (a local instance unless ``address``); an already initialized Ray is reused."""
    ray = require("ray")
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
        ray.init(**kwargs, log_to_driver=False, configure_logging=False)
    return ray


def launch(
    sweep: Sweep,
    uri: str,
    runs: list[Run],
    log_dir: Path,
    *,
    resources: dict,
    retry_failed: bool,
    parent: str | None,
    workers: int = 1,
    address: str | None = None,
    extra_fit_args: list[str] | tuple = (),
) -> dict[str, str]:
    """Run ``runs`` as Ray tasks, at most ``workers`` at a time; returns {hash: outcome}."""
    ray = ensure_ray(address)
    from normlight.sweep.slurm import fit_args

    remote = ray.remote(max_retries=1)(_run_point).options(**resources_of(resources))
    args = (*fit_args({k: v for k, v in resources.items() if k != "nodes"}), *extra_fit_args)
    todo = list(runs)
    in_flight: dict = {}
    results: dict[str, str] = {}
    try:
        while todo or in_flight:
            while todo and len(in_flight) < max(1, workers):
                r = todo.pop(0)
                task = PointTask(
                    str(sweep.path.resolve()),
                    r.hash,
                    uri,
                    str(log_dir.resolve()),
                    retry_failed=retry_failed,
                    parent=parent,
                    fit_args=args,
                )
                in_flight[remote.remote(task)] = r
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                r = in_flight.pop(ref)
                try:
                    results[r.hash] = str(ray.get(ref))
                except Exception as e:  # noqa: BLE001 - a task error is this point's result, not the driver's
                    results[r.hash] = f"failed (task error: {str(e).strip().splitlines()[-1][:200]})"
                print(f"[sweep] {results[r.hash]:>10} {r.name} (ray task)", flush=True)
    except KeyboardInterrupt:
        for ref in in_flight:
            ray.cancel(ref, force=False)  # KeyboardInterrupt in the task: its training ends KILLED
        raise
    return results


__all__ = ["ensure_ray", "launch", "resources_of"]
