"""How long a database statement may take, on the client side, in the current context.

Every request runs under `PORTAL_DB_DEADLINE_S` (RequestDeadlineMiddleware); a block can set a
shorter one with `client_deadline()` (the health refresher, /readyz). Outside both (commands,
migrations, background runs) there is none: a long migration is not cut. The PostgreSQL backend
(portal/db/postgresql) enforces it through the watchdog.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse


@dataclass
class Deadline:
    """One block's deadline; once a statement in it was cut, the block does not reconnect."""

    seconds: float
    enclosing: Deadline | None = None
    cut: bool = False

    def mark_cut(self) -> None:
        """The database hangs: every enclosing block gives up on it too."""
        deadline: Deadline | None = self
        while deadline is not None:
            deadline.cut = True
            deadline = deadline.enclosing


_current: ContextVar[Deadline | None] = ContextVar("database_deadline", default=None)


def current_deadline() -> Deadline | None:
    return _current.get()


def current_deadline_s() -> float | None:
    deadline = _current.get()
    return None if deadline is None else deadline.seconds


@contextlib.contextmanager
def client_deadline(seconds: float) -> Iterator[None]:
    """Statements in the block are cut after `seconds` (or the enclosing deadline if shorter)."""
    enclosing = _current.get()
    if enclosing is not None:
        seconds = min(seconds, enclosing.seconds)
    token = _current.set(Deadline(seconds=seconds, enclosing=enclosing))
    try:
        yield
    finally:
        _current.reset(token)


class RequestDeadlineMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with client_deadline(settings.PORTAL_DB_DEADLINE_S):
            return self.get_response(request)
