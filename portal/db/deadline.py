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

from django.conf import settings
from django.http import HttpRequest, HttpResponse

_deadline_s: ContextVar[float | None] = ContextVar("database_deadline_s", default=None)


def current_deadline_s() -> float | None:
    return _deadline_s.get()


@contextlib.contextmanager
def client_deadline(seconds: float) -> Iterator[None]:
    """Statements in the block are cut after `seconds` (or the enclosing deadline if shorter)."""
    enclosing = _deadline_s.get()
    token = _deadline_s.set(seconds if enclosing is None else min(seconds, enclosing))
    try:
        yield
    finally:
        _deadline_s.reset(token)


class RequestDeadlineMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with client_deadline(settings.PORTAL_DB_DEADLINE_S):
            return self.get_response(request)
