"""Training never waits for the tracking store: metrics (and the few tags and texts logged while training) are
sent in order by one background thread, retried while the store does not answer, and flushed at the end.

While the store is down (a stopped MLflow server, a locked sqlite file), training goes on: the operations wait in
memory and the thread retries them with backoff. One warning is printed when the store has not answered for
``warn_after`` seconds, one line when it answers again. :meth:`StoreWriter.flush` (called when the run ends) waits
until everything is sent; what still cannot be sent after ``flush_timeout`` is written to a JSON-lines file so
nothing is lost silently.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

# MLflow error codes that retrying cannot fix (a bad value, a deleted run): drop the operation with a warning
_PERMANENT = {
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_DOES_NOT_EXIST",
    "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE",
    "BAD_REQUEST",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
}


def is_permanent(exc: BaseException) -> bool:
    """Whether a failed store call would fail again (True) or may succeed later (False: outage, lock)."""
    return getattr(exc, "error_code", None) in _PERMANENT


class StoreWriter:
    """Ordered background sender for one MLflow run.

    Args:
        client: an ``MlflowClient``.
        run_id: the run all metrics go to.
        where: how to name the store in messages (already redacted).
        warn_after: seconds without an answer before the one warning.
        max_batch: metrics per ``log_batch`` call (MLflow's limit is 1000).
    """

    def __init__(self, client: Any, run_id: str, where: str, warn_after: float = 10.0, max_batch: int = 1000):
        self.client, self.run_id, self.where = client, run_id, where
        self.warn_after, self.max_batch = warn_after, max_batch
        self._queue: collections.deque = collections.deque()  # ("metrics", [Metric]) or ("call", fn, description)
        self._cond = threading.Condition()
        self._busy_since: float | None = None
        self._failing_since: float | None = None
        self._warned = False
        self._closed = False
        self.sent = 0
        self._thread = threading.Thread(target=self._loop, name="normlight-mlflow-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ training thread side
    def log_metrics(self, metrics: list) -> None:
        """Queue MLflow ``Metric`` objects (never blocks)."""
        if metrics:
            with self._cond:
                if self._queue and self._queue[-1][0] == "metrics":
                    self._queue[-1][1].extend(metrics)
                else:
                    self._queue.append(("metrics", list(metrics)))
                self._cond.notify()
            self._maybe_warn()

    def call(self, fn: Callable[[], Any], description: str) -> None:
        """Queue any other store call (a tag, a text artifact); runs after everything queued before it."""
        with self._cond:
            self._queue.append(("call", fn, description))
            self._cond.notify()
        self._maybe_warn()

    def pending(self) -> int:
        """Operations (metric points count one each) not yet sent."""
        with self._cond:
            return sum(len(op[1]) if op[0] == "metrics" else 1 for op in self._queue)

    def _maybe_warn(self) -> None:
        with self._cond:  # re-entrant: also called with the lock held
            since = self._failing_since or self._busy_since
            if self._warned or since is None or time.monotonic() - since <= self.warn_after:
                return
            self._warned = True
            print(
                f"normlight: warning: the MLflow store at {self.where} is not answering; training continues and "
                f"{self.pending()} pending metric points and tags are kept in memory and retried",
                flush=True,
            )

    def flush(self, timeout: float | None = None, unsent_file: str | Path | None = None) -> bool:
        """Wait until every queued operation is sent (True), or ``timeout`` passes (False). On timeout, the unsent
        metric points go to ``unsent_file`` (JSON lines: key, value, timestamp, step) when given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy_since is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(timeout=1.0 if left is None else min(1.0, left))
                self._maybe_warn()
            done = not self._queue and self._busy_since is None
            left_over = [m for op in self._queue if op[0] == "metrics" for m in op[1]]
        if not done and unsent_file and left_over:
            with open(unsent_file, "a") as fh:
                for m in left_over:
                    fh.write(json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}))
                    fh.write("\n")
            print(
                f"normlight: error: the MLflow store at {self.where} did not answer; {len(left_over)} metric points "
                f"of run {self.run_id} were written to {unsent_file} instead",
                flush=True,
            )
        return done

    def close(self) -> None:
        """Stop the thread once the queue is empty (call :meth:`flush` first to wait for that)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ sender thread
    def _next(self):
        """(operation at the head of the queue, what to send of it now), or None once closed and empty."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            op = self._queue[0]
            self._busy_since = time.monotonic()
            return op, (op[1][: self.max_batch] if op[0] == "metrics" else op[1])

    def _loop(self) -> None:
        delay = 0.5
        while True:
            item = self._next()
            if item is None:
                return
            op, payload = item
            try:
                if op[0] == "metrics":
                    self.client.log_batch(self.run_id, metrics=payload)
                else:
                    payload()
            except Exception as exc:  # noqa: BLE001 - a store error must never reach the training loop
                if is_permanent(exc):
                    what = f"{len(payload)} metric points" if op[0] == "metrics" else op[2]
                    print(f"normlight: warning: MLflow refused {what}: {str(exc)[:300]}", flush=True)
                    self._done(op, payload)
                    continue
                with self._cond:
                    if self._failing_since is None:
                        self._failing_since = self._busy_since
                    self._busy_since = None
                    self._cond.notify_all()
                    end = time.monotonic() + delay  # backoff; new work does not shorten it
                    while time.monotonic() < end:
                        self._cond.wait(timeout=end - time.monotonic())
                delay = min(delay * 2, 30.0)
                continue
            self._done(op, payload)
            delay = 0.5

    def _done(self, op, payload) -> None:
        with self._cond:
            if op[0] == "metrics":  # appends only ever go to the end: drop the prefix that was sent
                del op[1][: len(payload)]
            if (op[0] != "metrics" or not op[1]) and self._queue and self._queue[0] is op:
                self._queue.popleft()
            self.sent += len(payload) if op[0] == "metrics" else 1
            back, self._warned = self._warned, False  # the next outage gets its own warning
            self._failing_since = self._busy_since = None
            self._cond.notify_all()
        if back:
            print(f"normlight: the MLflow store at {self.where} answers again; sending the pending points", flush=True)
