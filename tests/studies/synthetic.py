"""Synthetic RunRecords for the studies' verdict tests (numbers chosen by hand, no training)."""

from normlight.studies import RunRecord

_count = iter(range(10**6))


def run(sweep="s", *, seed=0, status="FINISHED", diverged=False, final=None, history=None, **labels) -> RunRecord:
    """One synthetic run; label keys use ``__`` for ``.`` (``model__placement="pre"``)."""
    lab = {k.replace("__", "."): v for k, v in labels.items()}
    lab["seed_everything"] = lab["seed"] = seed
    final = dict(final or {})
    history = {k: list(v) for k, v in (history or {}).items()}
    for k, v in final.items():
        history.setdefault(k, [(100, v)])
    return RunRecord(f"r{next(_count)}", sweep, lab, dict(lab), status, diverged, final, history, {})


def per_layer_final(prefix: str, values) -> dict:
    """``{prefix/l00: v0, ...}``."""
    return {f"{prefix}/l{i:02d}": float(v) for i, v in enumerate(values)}
