"""What the operator's liveness endpoint reports (Kopf's `--liveness` server, `kopf.on.probe`).

Kopf answers 200 with the probe handlers' results, and 500 when one raises. The one thing worth a
restart is a reconcile loop that no longer moves: a pass in flight for longer than STALL_AFTER
(an API or store call that never returns holds its run forever; a new process starts clean and,
reconciling level-based, continues where the old one was). Anything slower but moving is only
reported. Partial failures (one API call failing) are retried by the loop itself and counted in
the metrics, never a reason to restart.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

# A pass reads one run, its datasets, Jobs, pods and a few store markers: seconds, or minutes on
# a slow store. Fifteen minutes in one pass is not slowness.
STALL_AFTER = 900.0


class LoopStalled(RuntimeError):
    """A reconcile pass has been in flight for too long; the message names the run."""


class LoopWatch:
    def __init__(self, stall_after: float = STALL_AFTER, clock: Callable[[], float] = time.monotonic):
        self.stall_after, self.clock = stall_after, clock
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], float] = {}  # (namespace, run) → start of its pass
        self._last_done: float | None = None
        self._passes = 0

    @contextlib.contextmanager
    def pass_of(self, namespace: str, run: str) -> Iterator[None]:
        key = (namespace, run)
        with self._lock:
            self._in_flight[key] = self.clock()
        try:
            yield
        finally:
            with self._lock:
                self._in_flight.pop(key, None)
                self._last_done, self._passes = self.clock(), self._passes + 1

    def report(self) -> dict[str, Any]:
        """{passes, inFlight, lastPassSecondsAgo}; raises LoopStalled past STALL_AFTER."""
        now = self.clock()
        with self._lock:
            in_flight, last, passes = dict(self._in_flight), self._last_done, self._passes
        if in_flight:
            (ns, run), since = min(in_flight.items(), key=lambda kv: kv[1])
            if now - since > self.stall_after:
                raise LoopStalled(f"the reconcile pass of {ns}/{run} has run for {now - since:.0f}s "
                                  f"(limit {self.stall_after:.0f}s): the loop is stuck")
        return {"passes": passes, "inFlight": len(in_flight),
                "lastPassSecondsAgo": None if last is None else round(now - last, 1)}
