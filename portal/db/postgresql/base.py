"""Django's PostgreSQL backend with a client-side deadline on every statement and commit.

A statement running past the context's deadline (portal/db/deadline.py) has its socket shut
down by the watchdog, so it fails at once with an OperationalError that says so, and the
connection is not reused. Connecting is bounded by libpq's connect_timeout (settings).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from django.conf import settings
from django.db import DatabaseError, OperationalError
from django.db.backends.postgresql import base
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

from portal.db.deadline import client_deadline, current_deadline
from portal.db.watchdog import watchdog


class DatabaseWrapper(base.DatabaseWrapper):
    deadline_cut = False  # set once the watchdog cut this connection: never reuse it

    @contextlib.contextmanager
    def within_deadline(self) -> Iterator[None]:
        deadline = current_deadline()
        raw = self.connection
        if deadline is None or raw is None or raw.closed:
            yield
            return
        with watchdog.watch(raw.fileno(), deadline.seconds) as watch:
            try:
                yield
            except DatabaseError as error:
                if not watch.fired:
                    raise
                self.deadline_cut = True
                deadline.mark_cut()
                raise OperationalError(_cut_message(deadline.seconds)) from error
            if watch.fired:
                self.deadline_cut = True
                deadline.mark_cut()

    def ensure_connection(self) -> None:
        deadline = current_deadline()
        if self.connection is None and deadline is not None and deadline.cut:
            # A statement of this block was cut: connecting again would wait once more.
            raise OperationalError(_cut_message(deadline.seconds))
        super().ensure_connection()

    def get_connection_params(self) -> dict:
        params = super().get_connection_params()
        deadline = current_deadline()
        if deadline is not None:
            # libpq's minimum is 2 s; a shorter deadline still bounds the statements after.
            configured = float(params.get("connect_timeout") or deadline.seconds)
            params["connect_timeout"] = max(2, math.ceil(min(configured, deadline.seconds)))
        return params

    def make_cursor(self, cursor):
        return DeadlineCursorWrapper(cursor, self)

    def make_debug_cursor(self, cursor):
        return DeadlineCursorDebugWrapper(cursor, self)

    def _commit(self):
        with self.within_deadline():
            return super()._commit()  # type: ignore[misc]

    def _rollback(self):
        with self.within_deadline():
            return super()._rollback()  # type: ignore[misc]

    def is_usable(self) -> bool:
        if self.deadline_cut:
            return False
        # The check before reusing a kept connection ends on a hung server too (a worker
        # node's task has no request deadline): then the connection is closed and remade.
        with client_deadline(settings.PORTAL_DB_DEADLINE_S), self.within_deadline():
            return super().is_usable()

    def connect(self) -> None:
        self.deadline_cut = False
        super().connect()


class _WithinDeadline:
    db: DatabaseWrapper

    def _execute(self, sql, params, *ignored_wrapper_args):
        with self.db.within_deadline():
            return super()._execute(sql, params, *ignored_wrapper_args)  # type: ignore[misc]

    def _executemany(self, sql, param_list, *ignored_wrapper_args):
        with self.db.within_deadline():
            return super()._executemany(sql, param_list, *ignored_wrapper_args)  # type: ignore[misc]


class DeadlineCursorWrapper(_WithinDeadline, CursorWrapper):
    pass


class DeadlineCursorDebugWrapper(_WithinDeadline, CursorDebugWrapper):
    pass


def _cut_message(seconds: float) -> str:
    return (
        f"The database did not answer within {seconds:g} s (the client-side deadline); the "
        "connection was cut. Check that the database server is running and reachable"
    )
