"""A bound on the `?wait=` requests that hold a server thread at once, in all and per client.

A waiting request holds one of the process's few threads (gunicorn `--threads`) for up to
`PORTAL_API_MAX_WAIT_S`; without a bound, a handful of them take every thread and health
queues behind them. The bound is per server process because what it protects, the process's
threads, is per process. A request over it is refused before anything is queued (429).
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator

from rest_framework.exceptions import Throttled

RETRY_AFTER_S = 2


class TooManyWaiting(Throttled):
    """A 429 with Retry-After (DRF sets it from `wait`)."""

    def __init__(self, *, waiting: int, limit: int, yours: bool) -> None:
        who = "from you" if yours else "on this server process"
        super().__init__(
            wait=RETRY_AFTER_S,
            detail=(
                f"Too many requests are waiting for their runs ({waiting} {who}, at most "
                f"{limit}): nothing was queued. Send it without ?wait= and poll the run's "
                "Location, or retry shortly."
            ),
        )


class WaitSlots:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, client: str, *, limit: int, per_client: int) -> Iterator[None]:
        """Hold a slot for the block, or raise TooManyWaiting at once."""
        with self._lock:
            total = sum(self._waiting.values())
            if self._waiting[client] >= per_client:
                raise TooManyWaiting(waiting=self._waiting[client], limit=per_client, yours=True)
            if total >= limit:
                raise TooManyWaiting(waiting=total, limit=limit, yours=False)
            self._waiting[client] += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting[client] -= 1
                if self._waiting[client] <= 0:
                    del self._waiting[client]


wait_slots = WaitSlots()
