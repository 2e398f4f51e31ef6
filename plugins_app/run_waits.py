"""Waiting for a run to finish without polling its row every 100 ms.

Every service that finishes a run calls `announce_finished` inside its transaction:
- on PostgreSQL it sends `NOTIFY portal_run_finished, '<run id>'`, which PostgreSQL delivers
  at commit to every listening session, of this process or any other (a worker node's finish
  wakes a web process's `?wait=`); a waiter LISTENs on a connection of its own before it reads
  the run, so no finish slips between its read and its wait;
- in every case it bumps this process's generation once the transaction commits, which wakes
  waiters here (the thread executor) on any database;
- a waiter on another database (SQLite) whose run finishes in another process (a node, a
  command) has nothing to listen to and reads the row every SQLITE_POLL_S: measured 0.5 ms of
  CPU per read on the 2-core development machine, so about 5 % of a core per waiting request.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.db import connection, connections, transaction

CHANNEL = "portal_run_finished"
SQLITE_POLL_S = 0.01
# A lost notification (a writer without this code) costs at most this much extra wait.
RECHECK_S = 1.0

T = TypeVar("T")

_changed = threading.Condition()
_generation = 0


def announce_finished(run_id: int) -> None:
    """Tell waiters, once the caller's transaction commits, that run `run_id` finished."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, str(run_id)])
    transaction.on_commit(_wake_here)


def _wake_here() -> None:
    global _generation
    with _changed:
        _generation += 1
        _changed.notify_all()


def wait_until_finished(
    run_id: int, *, timeout_s: float, read: Callable[[], T], finished: Callable[[T], bool]
) -> T:
    """`read()` again each time run `run_id` may have finished, until `finished` says so or
    `timeout_s` passed; returns the last read."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    with _listening() as notices:
        while True:
            seen = _generation
            value = read()
            remaining = deadline - time.monotonic()
            if finished(value) or remaining <= 0:
                return value
            if notices is not None:
                _next_notice(notices, str(run_id), min(remaining, RECHECK_S))
            else:
                _next_local(seen, min(remaining, SQLITE_POLL_S))


@contextlib.contextmanager
def _listening() -> Iterator[Any]:
    """A connection of its own LISTENing on PostgreSQL (its psycopg connection), else None."""
    if connection.vendor != "postgresql":
        yield None
        return
    listener = connections.create_connection("default")
    try:
        listener.ensure_connection()
        raw = listener.connection
        raw.autocommit = True
        raw.execute(f"LISTEN {CHANNEL}")
        yield raw
    finally:
        listener.close()


def _next_notice(raw: Any, payload: str, timeout_s: float) -> None:
    for notice in raw.notifies(timeout=timeout_s):
        if notice.payload == payload:
            return


def _next_local(seen: int, timeout_s: float) -> None:
    with _changed:
        _changed.wait_for(lambda: _generation != seen, timeout=timeout_s)
