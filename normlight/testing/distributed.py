"""The 2-rank gloo check of the conformance kit: each rank normalizes its shard in its own process.

``run_ranks`` launches ``python -m normlight.testing.distributed CONFIG_JSON`` once per rank; each worker
builds the norm, runs one training forward+backward on its shard and saves outputs, gradients and
buffers for the parent to compare with one process on the full batch (``sync_case`` with world 1).
"""

from __future__ import annotations

import datetime
import functools
import importlib
import json
import os
import socket
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist

from normlight.norms.factory import create_norm


def load_spec(spec: str) -> Any:
    """A registered name as is, or ``py:module:qualname`` imported."""
    if not spec.startswith("py:"):
        return spec
    _, mod, qual = spec.split(":", 2)
    return functools.reduce(getattr, qual.split("."), importlib.import_module(mod))


def sync_case(spec: Any, num_features: int, options: dict, context: dict, rank: int, world: int) -> dict:
    """One training forward+backward on this rank's shard (rank 0 of world 1 = the full batch)."""
    torch.manual_seed(0)
    m = create_norm(spec, num_features, **context, **options).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, num_features, generator=g) * 2 + 0.5
    w = torch.randn(4, 6, num_features, generator=g)
    xs = x.chunk(world)[rank].clone().requires_grad_()
    y = m(xs)
    (y * w.chunk(world)[rank]).sum().backward()
    return {
        "y": y.detach(),
        "xgrad": xs.grad,
        "grads": {n: p.grad for n, p in m.named_parameters() if p.grad is not None},
        "buffers": {n: b for n, b in m.state_dict().items() if b.is_floating_point()},
    }


def main(argv: list[str]) -> int:
    """One rank: ``argv[0]`` is the JSON config written by :func:`run_ranks`."""
    cfg = json.loads(argv[0])
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(cfg["port"]))
    # the parent's timeout, not gloo's default 30 min: a rank whose peer died fails instead of waiting
    timeout = datetime.timedelta(seconds=cfg["timeout"])
    dist.init_process_group("gloo", rank=cfg["rank"], world_size=cfg["world"], timeout=timeout)
    try:
        out = sync_case(
            load_spec(cfg["spec"]), cfg["num_features"], cfg["options"], cfg["context"], cfg["rank"], cfg["world"]
        )
        torch.save(out, cfg["out"])
        dist.barrier()  # no rank tears down gloo while the other still talks to it
    finally:
        dist.destroy_process_group()
    return 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(
    spec: str, num_features: int, options: dict, context: dict, tmp: str, world: int, timeout: float
) -> str | None:
    """Launch ``world`` gloo ranks writing ``rank<r>.pt`` into ``tmp``; None on success, else the failing rank's output tail.

    Raises ``TimeoutError`` if a rank does not finish within ``timeout`` seconds.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    port, procs = free_port(), []
    for rank in range(world):
        cfg = dict(
            spec=spec,
            num_features=num_features,
            options=options,
            context=context,
            rank=rank,
            world=world,
            port=port,
            timeout=timeout,
            out=os.path.join(tmp, f"rank{rank}.pt"),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "normlight.testing.distributed", json.dumps(cfg)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    failed = None
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            for q in procs:
                q.wait()  # joined: no rank outlives the check
            raise TimeoutError(f"the {world}-rank gloo run did not finish within {timeout:.0f} s") from None
        if p.returncode and failed is None:
            failed = f"a rank exited with {p.returncode}:\n    " + "\n    ".join(out.strip().splitlines()[-8:])
    return failed


def exit_now(code: int) -> None:
    """Leave without interpreter finalization: the group is already destroyed on every rank (barrier, destroy),
    and gloo objects still referenced at exit would otherwise be torn down during finalization in no fixed
    order, which can end in std::terminate (rc -6) after the results were saved."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
