"""Every API error is a JSON body `{"detail": "..."}` with the right status, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, DataError
from rest_framework import status
from rest_framework.exceptions import APIException, UnsupportedMediaType
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from plugins_app.errors import (
    IllegalTransition,
    InvalidParams,
    PluginError,
    PluginNotFound,
    PluginRefused,
    RunNotFound,
)
from plugins_app.health_snapshot import reader

logger = logging.getLogger("plugins_app.api")

# Domain errors carry an actionable sentence; this is the status each one answers with.
DOMAIN_STATUS: dict[type[PluginError], int] = {
    PluginNotFound: status.HTTP_404_NOT_FOUND,
    RunNotFound: status.HTTP_404_NOT_FOUND,
    PluginRefused: status.HTTP_409_CONFLICT,
    IllegalTransition: status.HTTP_409_CONFLICT,
    InvalidParams: status.HTTP_400_BAD_REQUEST,
}

DATABASE_UNAVAILABLE = (
    "The portal's database cannot be reached right now, so this request was not carried out "
    "(retry shortly; the health endpoints keep answering from their last snapshot)"
)
INTERNAL_ERROR = (
    "The portal hit an unexpected error handling this request; it was logged for the operators "
    "with its traceback (retry, and report it if it persists)"
)
VALUE_REFUSED = (
    "The database refused a value in this request as invalid (such as a NUL character or a "
    "number out of range), so nothing was changed (check the values you sent)"
)
RETRY_AFTER_S = "5"
SEND_JSON = (
    "send the body as JSON with the header Content-Type: application/json, for example: curl "
    "-H 'Authorization: Token <key>' -H 'Content-Type: application/json' "
    """-d '{"params": {"name": "Ann"}}' .../v1/plugins/NAME/runs"""
)


class InvalidInput(APIException):
    """A 400 whose message names the offending field and what is wrong with it."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"

    def __init__(self, where: str, errors: Any) -> None:
        self.errors = errors
        super().__init__(f"Invalid {where}: {_summarise(errors)}")


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            f"Request body is larger than the {limit_bytes} bytes this API accepts "
            "(send smaller params, or raise PORTAL_API_MAX_BODY_BYTES)"
        )


class ServiceUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"


def log_database_error(where: str, error: Exception) -> None:
    """A warning per failed request, unless the node's refresher already logged the outage."""
    snapshot = reader.current()
    outage_known = snapshot is not None and not snapshot.database_up
    log = logger.debug if outage_known else logger.warning
    log("Database error in %s: %s: %s", where, type(error).__name__, error)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's handler, plus domain errors, database outages and a catch-all with no traceback."""
    if isinstance(exc, PluginError):
        return error_response(str(exc), _domain_status(exc))
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(settings.PORTAL_API_MAX_BODY_BYTES)
    if isinstance(exc, DataError):
        # The database is up and answered: it refused the request's value, not an outage.
        logger.warning("Value refused in %s: %s", _where(context), exc)
        return error_response(VALUE_REFUSED, status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, UnsupportedMediaType):
        # curl's -d sends a form: say what to send instead of only what was refused.
        request = context.get("request")
        media_type = getattr(request, "content_type", "") or ""
        what = f'Unsupported media type "{media_type}"' if media_type else "No media type"
        exc = UnsupportedMediaType(media_type, detail=f"{what}: {SEND_JSON}")
    if isinstance(exc, DatabaseError):
        log_database_error(_where(context), exc)
        return database_unavailable_response()
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.error("Unexpected error in %s", _where(context), exc_info=exc)
        return error_response(INTERNAL_ERROR, status.HTTP_500_INTERNAL_SERVER_ERROR)
    body = {"detail": _detail(response.data)}
    if isinstance(exc, InvalidInput):
        body["errors"] = exc.errors
    response.data = body
    return response


def error_response(
    detail: str, status_code: int, headers: dict[str, str] | None = None
) -> Response:
    return Response({"detail": detail}, status=status_code, headers=headers)


def database_unavailable_response() -> Response:
    return error_response(
        DATABASE_UNAVAILABLE,
        status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": RETRY_AFTER_S},
    )


def _domain_status(exc: PluginError) -> int:
    for cls in type(exc).__mro__:
        if cls in DOMAIN_STATUS:
            return DOMAIN_STATUS[cls]
    return status.HTTP_409_CONFLICT


def _detail(data: Any) -> str:
    if isinstance(data, dict) and set(data) == {"detail"}:
        return str(data["detail"])
    return _summarise(data)


def _summarise(errors: Any) -> str:
    """`{"params": ["Expected a dict"]}` → `params: Expected a dict` (every field, in order)."""
    if isinstance(errors, dict):
        parts = []
        for field, messages in errors.items():
            text = _summarise(messages)
            parts.append(text if field in {"non_field_errors", "detail"} else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(errors, list | tuple):
        return " ".join(_summarise(item) for item in errors)
    return str(errors)


def _where(context: dict[str, Any]) -> str:
    request = context.get("request")
    if request is None:
        return "the API"
    return f"{request.method} {request.path}"
