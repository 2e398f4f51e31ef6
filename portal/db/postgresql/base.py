"""Django's PostgreSQL backend with a client-side deadline on every statement and commit.

A statement running past the context's deadline (portal/db/deadline.py) has its socket shut
down by the watchdog, so it fails at once with an OperationalError that says so, and the
connection is not reused. Connecting is bounded by libpq's connect_timeout (settings).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import DatabaseError, OperationalError
from django.db.backends.postgresql import base
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

from portal.db.deadline import current_deadline_s
from portal.db.watchdog import watchdog


class DatabaseWrapper(base.DatabaseWrapper):
    deadline_cut = False  # set once the watchdog cut this connection: never reuse it

    @contextlib.contextmanager
    def within_deadline(self) -> Iterator[None]:
        seconds = current_deadline_s()
        raw = self.connection
        if seconds is None or raw is None or raw.closed:
            yield
            return
        with watchdog.watch(raw.fileno(), seconds) as watch:
            try:
                yield
            except DatabaseError as error:
                if not watch.fired:
                    raise
                self.deadline_cut = True
                raise OperationalError(
                    f"The database did not answer within {seconds:g} s (the client-side "
                    "deadline); the connection was cut. Check that the database server is "
                    "running and reachable"
                ) from error
            if watch.fired:
                self.deadline_cut = True

    def make_cursor(self, cursor):
        return DeadlineCursorWrapper(cursor, self)

    def make_debug_cursor(self, cursor):
        return DeadlineCursorDebugWrapper(cursor, self)

    def _commit(self):
        with self.within_deadline():
            return super()._commit()

    def _rollback(self):
        with self.within_deadline():
            return super()._rollback()

    def is_usable(self) -> bool:
        if self.deadline_cut:
            return False
        with self.within_deadline():
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
