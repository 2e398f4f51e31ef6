"""The node's one health refresher: reads every plugin's health and publishes the snapshot.

Every server process starts a refresher thread at its first request; the threads of a node
queue on an `fcntl` lock beside the snapshot file, so exactly one process refreshes and, when
it dies, the next in line takes over at once (the kernel drops a dead process's lock). Each
refresh is one query under a client-side deadline (`PORTAL_HEALTH_DB_TIMEOUT_S`, which cuts a
hung connection: portal/db/) every `PORTAL_HEALTH_REFRESH_S`. Because only the refresher
talks to the database about health, an outage is logged once per node: one line when it
starts, one when it ends, with its duration (the start is kept in the file, so a refresher that
takes over mid-outage continues it rather than announcing a new one).

With `PORTAL_HEALTH_REFRESH_ON_READ` (the test suite) each health read refreshes first, in its
own thread, so a test that changes state and reads health at once sees the change.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse

from plugins_app import node_file, selectors
from plugins_app.api.deadline import read_deadline
from plugins_app.health_snapshot import SnapshotDocument, reader

logger = logging.getLogger("plugins_app.health")


def refresh_once() -> bool:
    """Read every plugin's health and publish it (or that the read failed); True if it read."""
    path = Path(settings.PORTAL_HEALTH_SNAPSHOT_FILE)
    attempted_at = time.time()
    try:
        with read_deadline(settings.PORTAL_HEALTH_DB_TIMEOUT_S):
            records = selectors.health_records()
    except Exception as error:
        _publish_failure(path, attempted_at, error)
        return False
    held = _held(path)
    document = SnapshotDocument(
        read_at=attempted_at,
        records=records,
        refreshed_at=attempted_at,
        failing_since=None,
        failure=None,
    )
    if _write(path, document) and held is not None and held.get("failing_since"):
        logger.warning(
            "Health refresh: the database answers again after %.1f s; health is fresh again",
            attempted_at - float(held["failing_since"]),
        )
    return True


def _publish_failure(path: Path, attempted_at: float, error: BaseException) -> None:
    held = _held(path) or {}
    failing_since = held.get("failing_since")
    document = SnapshotDocument(
        read_at=float(held.get("read_at") or 0.0),
        records=held.get("records") or [],
        refreshed_at=attempted_at,
        failing_since=float(failing_since) if failing_since else attempted_at,
        failure=f"{type(error).__name__}: {_one_line(error)}",
    )
    if _write(path, document) and not failing_since:
        logger.error(
            "Health refresh: the database did not answer (%s); health is served from the "
            "snapshot read %s, marked stale, until it does (logged once per outage; check the "
            "database and the network to it)",
            document["failure"],
            f"{attempted_at - document['read_at']:.1f} s ago" if document["read_at"] else "never",
            exc_info=error if not _is_database_error(error) else None,
        )


def _held(path: Path) -> dict | None:
    try:
        return node_file.load(path)
    except OSError:
        return None


_write_failing = False  # a failing disk is logged once until a write succeeds again


def _write(path: Path, document: SnapshotDocument) -> bool:
    global _write_failing
    try:
        written = node_file.replace_if_newer(path, dict(document), time_key="refreshed_at")
    except OSError as error:
        if not _write_failing:
            logger.error(
                "Health refresh: cannot write the snapshot %s (%s): health answers from an older "
                "one; make the directory writable by the portal (logged once)",
                path,
                error,
            )
        _write_failing = True
        return False
    _write_failing = False
    return written


def _is_database_error(error: BaseException) -> bool:
    from django.db import DatabaseError

    return isinstance(error, DatabaseError)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] or "no message"


class NodeRefresher:
    """This process's refresher thread, which refreshes only while it holds the node's lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started_in: int | None = None  # the pid: a forked child starts its own
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshing = threading.Event()  # set while this process is the node's refresher
        self.published = threading.Event()  # set after each refresh (tests await it)

    def ensure_started(self) -> None:
        if self._started_in == os.getpid():
            return
        with self._lock:
            if self._started_in == os.getpid():
                return
            self._started_in = os.getpid()
            self._stop = threading.Event()
            self.refreshing = threading.Event()
            self.published = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name="health-snapshot-refresher", daemon=True
            )
            self._thread.start()

    def stop(self, *, wait_s: float = 0.0) -> None:
        """Stop refreshing (the lock goes to the next process in line); wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait_s)
        self._started_in = None  # a later ensure_started() starts a new thread

    def _run(self) -> None:
        lock_path = f"{settings.PORTAL_HEALTH_SNAPSHOT_FILE}.refresher"
        try:
            Path(lock_path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_file = open(lock_path, "a")  # noqa: SIM115 - held for the thread's life
        except OSError as error:
            logger.error(
                "Health refresh: cannot open %s (%s), so this process never refreshes the "
                "snapshot; make the directory writable by the portal",
                lock_path,
                error,
            )
            return
        with lock_file:
            if not self._wait_for_the_lock(lock_file):
                return
            self.refreshing.set()
            logger.info("Health refresh: process %d refreshes this node's snapshot", os.getpid())
            try:
                self._refresh_until_stopped()
            finally:
                self.refreshing.clear()
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _wait_for_the_lock(self, lock_file) -> bool:
        while not self._stop.is_set():
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                # Blocking in flock could not be stopped; the holder's death frees it for a retry.
                self._stop.wait(settings.PORTAL_HEALTH_REFRESH_S)
        return False

    def _refresh_until_stopped(self) -> None:
        interval = settings.PORTAL_HEALTH_REFRESH_S
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                refresh_once()
                connections[DEFAULT_DB_ALIAS].close_if_unusable_or_obsolete()
            except Exception:  # the thread must outlive any bug: health would freeze
                logger.exception("Health refresh: unexpected error; retrying")
                with contextlib.suppress(Exception):
                    connections[DEFAULT_DB_ALIAS].close()
            self.published.set()
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))
        with contextlib.suppress(Exception):
            connections[DEFAULT_DB_ALIAS].close()


refresher = NodeRefresher()


class HealthRefresherMiddleware:
    """Starts this process's refresher thread at its first request (gunicorn, runserver)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not settings.PORTAL_HEALTH_REFRESH_ON_READ:
            refresher.ensure_started()
        return self.get_response(request)


_first_read_lock = threading.Lock()
_first_read_tried = threading.Event()


def current_snapshot():
    """The node's snapshot for a health read (refreshed first if PORTAL_HEALTH_REFRESH_ON_READ).

    A node that has never read the database (its first second, before the refresher's first
    read) reads it once in the request, within the health deadline, rather than answer 503.
    """
    if settings.PORTAL_HEALTH_REFRESH_ON_READ:
        refresh_once()
        return reader.current()
    snapshot = reader.current()
    if (snapshot is None or not snapshot.read_at) and not _first_read_tried.is_set():
        with _first_read_lock:
            if not _first_read_tried.is_set():
                refresh_once()
                _first_read_tried.set()
        snapshot = reader.current()
    return snapshot
