"""The Django-level safety net under /v1/ and /metrics: errors from outside DRF become JSON.

DRF's exception handler covers the API views; this covers everything around them (URL
resolution, other middleware, rendering, Django's own 400/404/500 pages), so an API client
never receives an HTML error page or a traceback, even with DEBUG on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

from plugins_app.api.errors import (
    DATABASE_UNAVAILABLE,
    INTERNAL_ERROR,
    RETRY_AFTER_S,
    log_database_error,
)

logger = logging.getLogger("plugins_app.api")

API_PREFIXES = ("/v1/", "/metrics")

_MESSAGES = {
    400: "Bad request: the server could not accept it as sent (check the Host header, the body "
    "and its size)",
    403: "Forbidden: the request was refused (for a session, send the CSRF token)",
    404: "No API endpoint at this path (the endpoints are listed at /v1/docs/)",
    405: "Method not allowed on this path (the endpoints are listed at /v1/docs/)",
    413: "Request body too large for this API",
}


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES) or path == "/v1"


def json_error(detail: str, status: int, **headers: str) -> HttpResponse:
    response = HttpResponse(
        json.dumps({"detail": detail}), status=status, content_type="application/json"
    )
    for name, value in headers.items():
        response[name] = value
    return response


LENGTH_REQUIRED = (
    "Send the request body with a Content-Length header, not Transfer-Encoding: chunked: the "
    "server cannot pass a chunked body on, so its params would be lost (nothing was run)"
)


def length_required() -> HttpResponse:
    """411 for a chunked body, which WSGI servers hand Django as empty (params silently lost)."""
    return json_error(LENGTH_REQUIRED, 411)


class ApiSafetyNetMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_api_path(request.path):
            return self.get_response(request)
        if "HTTP_TRANSFER_ENCODING" in request.META:
            return length_required()
        try:
            response = self.get_response(request)
        except Exception as error:  # a last resort: Django converts most errors itself
            return self._error_response(request, error)
        return self._as_json(response)

    def process_exception(self, request: HttpRequest, error: Exception) -> HttpResponse | None:
        """A view or renderer raised past DRF: answer JSON, log the traceback."""
        if not is_api_path(request.path):
            return None
        return self._error_response(request, error)

    def _error_response(self, request: HttpRequest, error: Exception) -> HttpResponse:
        if isinstance(error, DatabaseError):
            log_database_error(f"{request.method} {request.path}", error)
            return json_error(DATABASE_UNAVAILABLE, 503, **{"Retry-After": RETRY_AFTER_S})
        logger.error("Unexpected error in %s %s", request.method, request.path, exc_info=error)
        return json_error(INTERNAL_ERROR, 500)

    def _as_json(self, response: HttpResponse) -> HttpResponse:
        """Replace Django's HTML error pages (and any traceback page) with a JSON body."""
        if response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        status = response.status_code
        detail = _MESSAGES.get(status) or (
            INTERNAL_ERROR if status >= 500 else f"Request refused ({status})"
        )
        replacement = json_error(detail, status)
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if header in response:
                replacement[header] = response[header]
        return replacement
