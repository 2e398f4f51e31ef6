"""Waiting for a run to finish without polling its row every 100 ms.

Every service that finishes a run calls `announce_finished` inside its transaction:
- on PostgreSQL it sends `NOTIFY portal_run_finished, '<run id>'`, which PostgreSQL delivers
  at commit to every listening session, of this process or any other (a worker node's finish
  wakes a web process's `?wait=`); one connection per process LISTENs for all its waiters
  (`_Listener`), and is listening before a waiter reads its run, so no finish slips between
  the read and the wait;
- in every case it bumps this process's generation once the transaction commits, which wakes
  waiters here (the thread executor) on any database;
- a waiter on another database (SQLite) whose run finishes in another process (a node, a
  command) has nothing to listen to and reads the row every SQLITE_POLL_S: measured 0.5 ms of
  CPU per read on the 2-core development machine, so about 5 % of a core per waiting request.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.db import connection, connections, transaction

from plugins_app.loops import Linger

logger = logging.getLogger(__name__)

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
    if connection.vendor != "postgresql":
        while True:
            seen = _generation
            value = read()
            remaining = deadline - time.monotonic()
            if finished(value) or remaining <= 0:
                return value
            _next_local(seen, min(remaining, SQLITE_POLL_S))
    with _listener.waiting_for(run_id):
        while True:
            value = read()
            remaining = deadline - time.monotonic()
            if finished(value) or remaining <= 0:
                return value
            _listener.next_notice(run_id, min(remaining, RECHECK_S))


def waits_in_progress() -> int:
    """How many waits of this process are listening for their run's finish (PostgreSQL)."""
    return _listener.waits()


def stop_listening() -> None:
    """Close this process's listening connection now (tests, before their database goes)."""
    _listener.stop()


def _next_local(seen: int, timeout_s: float) -> None:
    with _changed:
        _changed.wait_for(lambda: _generation != seen, timeout=timeout_s)


class _Listener:
    """One connection per process LISTENing on PostgreSQL for every wait of the process, on a
    thread of its own: a wait costs no connection, and a finish wakes only the waits for its
    run. It closes after LINGER_S with no wait. While it is down (the database restarting),
    waits read their run every RECHECK_S."""

    READY_WITHIN_S = 2.0  # how long a wait waits for a new listener's LISTEN, at most
    LINGER_S = 10.0  # sequential waits (a command's runs) keep one connection
    TICK_S = 0.5  # how often the thread looks up from the socket (stop, linger)

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._waiting: dict[int, int] = {}  # run id: waits for it
        self._notified: set[int] = set()  # runs of those whose finish was announced
        self._listening = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def waiting_for(self, run_id: int) -> Iterator[None]:
        """Register the wait, then make sure someone LISTENs before the caller reads the run,
        so no finish falls between its read and its wait."""
        with self._lock:
            self._waiting[run_id] = self._waiting.get(run_id, 0) + 1
            started = self._thread is None or not self._thread.is_alive()
            if started:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._loop, args=(self._stop,), name="portal-run-waits", daemon=True
                )
                self._thread.start()
        if started:
            self._listening.wait(self.READY_WITHIN_S)  # else rechecks bound the wait
        try:
            yield
        finally:
            with self._lock:
                self._waiting[run_id] -= 1
                if not self._waiting[run_id]:
                    del self._waiting[run_id]
                    self._notified.discard(run_id)

    def waits(self) -> int:
        with self._lock:
            return sum(self._waiting.values())

    def next_notice(self, run_id: int, timeout_s: float) -> None:
        """Return once run `run_id`'s finish is announced, or after `timeout_s`."""
        with self._lock:
            self._lock.wait_for(lambda: run_id in self._notified, timeout=timeout_s)
            self._notified.discard(run_id)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join(5)

    def _loop(self, stop: threading.Event) -> None:
        linger = Linger(self.LINGER_S)
        listener = connections.create_connection("default")
        try:
            while not stop.is_set():
                try:
                    if not self._listening.is_set():
                        listener.ensure_connection()
                        raw = listener.connection
                        raw.autocommit = True
                        raw.execute(f"LISTEN {CHANNEL}")
                        self._listening.set()
                    for notice in listener.connection.notifies(timeout=self.TICK_S):
                        self._heard(notice.payload)
                except Exception:
                    logger.warning(
                        "Listening for finished runs failed; waits read their run every %g s "
                        "until it is back",
                        RECHECK_S,
                        exc_info=True,
                    )
                    self._lost(listener)
                    stop.wait(RECHECK_S)
                with self._lock:
                    if linger.over(busy=bool(self._waiting)):
                        if self._thread is threading.current_thread():
                            self._thread = None  # the next wait starts a new one
                        return
        finally:
            self._lost(listener)

    def _lost(self, listener: Any) -> None:
        """The connection is gone or closed: every wait reads its run again."""
        self._listening.clear()
        listener.close()
        with self._lock:
            self._notified.update(self._waiting)
            self._lock.notify_all()

    def _heard(self, payload: str) -> None:
        try:
            run_id = int(payload)
        except ValueError:
            return
        with self._lock:
            if run_id in self._waiting:
                self._notified.add(run_id)
                self._lock.notify_all()


_listener = _Listener()
