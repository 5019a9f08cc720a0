"""Read finished runs back from MLflow: the newest run of an experiment, one summary row per run."""

from __future__ import annotations

from mlflow import MlflowClient

from normlight.tracking.sweep_runs import client

__all__ = ["client", "latest_run", "run_rows"]


def latest_run(c: MlflowClient, experiment: str) -> tuple[str, str]:
    """``(run_id, run_name)`` of the most recently started run of ``experiment``."""
    exp = c.get_experiment_by_name(experiment)
    latest = c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    return latest.info.run_id, latest.info.run_name


def run_rows(client: MlflowClient, run_ids: list[str]) -> list[dict]:
    """One row per run: family, norm, final validation metric, params, throughput, status."""
    rows = []
    for rid in run_ids:
        r = client.get_run(rid)
        m, t = r.data.metrics, r.data.tags
        lm = t.get("family") == "gpt"
        rate = next(
            (
                (k.split("/")[1].rsplit("_per_sec", 1)[0], v)
                for k, v in m.items()
                if k.startswith("summary/") and k.endswith("_per_sec")
            ),
            ("items", float("nan")),
        )
        rows.append(
            {
                "run": r.info.run_name,
                "family": t.get("family"),
                "norm": t.get("norm"),
                "metric": "val/ppl" if lm else "val/acc1",
                "value": m.get("val/ppl" if lm else "val/acc1"),
                "val_loss": m.get("val/loss"),
                "params": int(t.get("num_params", 0)),
                "throughput": rate[1],
                "unit": rate[0],
                "diverged": t.get("diverged") == "true",
                "status": r.info.status,
            }
        )
    return rows
