"""A time budget for one database read, so a locked or slow database fails fast, not hangs."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connections, transaction

from portal.db.deadline import client_deadline


@contextmanager
def read_deadline(seconds: float, *, using: str = "default") -> Iterator[None]:
    """Run the block's queries under a deadline; past it they raise a DatabaseError.

    Covers connecting (a locked SQLite file, an unreachable PostgreSQL), waiting for locks, slow
    statements, and a hung server (the client-side deadline cuts the connection: portal/db/).
    """
    with client_deadline(seconds), _server_deadline(seconds, using=using):
        yield


@contextmanager
def _server_deadline(seconds: float, *, using: str) -> Iterator[None]:
    connection = connections[using]
    if connection.connection is None:
        _connect_within(connection, seconds)
    millis = max(1, int(seconds * 1000))
    if connection.vendor == "postgresql":
        # Transaction-local (SET LOCAL): the timeouts end with this block.
        with transaction.atomic(using=using):
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true), "
                    "set_config('lock_timeout', %s, true)",
                    [str(millis), str(millis)],
                )
            yield
    elif connection.vendor == "sqlite":
        with _sqlite_deadline(connection, millis):
            yield
    else:
        yield


def _connect_within(connection, seconds: float) -> None:
    """Connect with a timeout of `seconds`, without touching the settings other threads share."""
    shared = connection.settings_dict
    options = dict(shared.get("OPTIONS") or {})
    if connection.vendor == "sqlite":
        options["timeout"] = seconds  # the busy timeout, which bounds the connect-time PRAGMAs
    elif connection.vendor == "postgresql":
        options["connect_timeout"] = max(2, math.ceil(seconds))  # libpq's minimum is 2 s
    connection.settings_dict = {**shared, "OPTIONS": options}
    try:
        connection.ensure_connection()
    finally:
        connection.settings_dict = shared


@contextmanager
def _sqlite_deadline(connection, millis: int) -> Iterator[None]:
    raw = connection.connection
    deadline = time.monotonic() + millis / 1000
    usual_ms = int((connection.settings_dict.get("OPTIONS") or {}).get("timeout", 5) * 1000)
    # The busy timeout bounds waiting for a lock; the progress handler bounds a slow query.
    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {millis:d}")
        yield
    finally:
        raw.set_progress_handler(None, 0)
        # A broken connection is closed at the end of the request anyway.
        with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {usual_ms:d}")
