"""Who may call what, how often, with how large a body, and how lists are paged."""

from __future__ import annotations

import binascii
import json
import logging
from base64 import b64decode
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.utils.dateparse import parse_datetime
from redis.exceptions import RedisError
from rest_framework import permissions
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.throttling import UserRateThrottle

from plugins_app.api.errors import InvalidInput, PayloadTooLarge

RUN_PLUGIN_PERMISSION = "plugins_app.run_plugin"

logger = logging.getLogger(__name__)


class CanRunPlugins(permissions.BasePermission):
    message = (
        "This needs the 'plugins_app.run_plugin' permission (ask an administrator to grant it "
        "to your user or one of its groups)"
    )

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(RUN_PLUGIN_PERMISSION))


class PublicRead(permissions.BasePermission):
    """A view's opt-in to anonymous reads, unless PORTAL_API_READS_REQUIRE_AUTH is on."""

    @staticmethod
    def open() -> bool:
        return not settings.PORTAL_API_READS_REQUIRE_AUTH  # read at request time

    def has_permission(self, request: Request, view: Any) -> bool:
        return self.open() or bool(request.user and request.user.is_authenticated)


def write_permissions() -> list[permissions.BasePermission]:
    return [permissions.IsAuthenticated(), CanRunPlugins()]


class PluginWriteThrottle(UserRateThrottle):
    """Runs and reloads per user, at PORTAL_API_WRITE_RATE (read at request time)."""

    scope = "plugin_writes"

    def get_rate(self) -> str | None:
        return settings.PORTAL_API_WRITE_RATE

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except RedisError as error:
            # The shared cache is down: operators keep running plugins, unthrottled meanwhile.
            logger.warning(
                "The write throttle could not reach the shared cache (PORTAL_CACHE_URL): %s; "
                "this write is let through unthrottled (check that Redis is up and reachable)",
                error,
            )
            return True


# Fewer brackets than this cannot nest deep enough for the caller's stack depth to matter.
_DEEP_BODY_BRACKETS = 100


def _loads_on_a_fresh_stack(text: str) -> Any:
    """json.loads whose depth limit does not depend on how deep the caller's stack is."""
    if text.count("[") + text.count("{") < _DEEP_BODY_BRACKETS:
        return json.loads(text)
    # The C parser recurses once per level: on a new thread's stack it reads the same depth
    # whether the server (gunicorn, runserver, a test worker) called it shallow or deep.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="json-body") as pool:
        return pool.submit(json.loads, text).result()


class CappedJSONParser(JSONParser):
    """JSON bodies up to PORTAL_API_MAX_BODY_BYTES; larger ones are a 413, not read into memory."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        limit = settings.PORTAL_API_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(limit)
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(limit)
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            return _loads_on_a_fresh_stack(raw.decode(encoding))
        except UnicodeDecodeError as error:
            raise ParseError(f"Request body is not valid {encoding} text: {error.reason}") from None
        except ValueError as error:
            raise ParseError(f"Request body is not valid JSON: {error}") from None
        except RecursionError:
            # The C parser recurses per level: thousands of `[` exhaust the stack.
            raise ParseError(
                "Request body is nested too deeply to read (send plain values, nested at most "
                "a few levels)"
            ) from None


def json_object(data: Any, *, where: str = "request body") -> dict:
    """A parsed body that must be a JSON object (DRF gives `{}` for an empty body)."""
    if not isinstance(data, dict):
        raise InvalidInput(
            where, {"non_field_errors": [f"Expected a JSON object, got {_json_type(data)}."]}
        )
    return data


def _json_type(value: Any) -> str:
    return {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), "something else")


class RunCursorPagination(CursorPagination):
    """Newest first; a cursor stays correct while new runs keep arriving."""

    ordering = ("-queued_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    invalid_cursor_message = (
        "This cursor does not point to a page of runs (follow the next/previous links "
        "from a previous page)"
    )

    def decode_cursor(self, request: Request) -> Cursor | None:
        """DRF's decoding, strict: only a cursor this API could have issued is followed."""
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is not None:
            try:
                b64decode(encoded.encode("ascii"), validate=True)
            except (UnicodeEncodeError, binascii.Error):
                raise NotFound(self.invalid_cursor_message) from None
        cursor = super().decode_cursor(request)
        # The position is a queued_at; anything else (a NUL) broke the query with a 500.
        if cursor is not None and cursor.position is not None:
            try:
                parsed = parse_datetime(str(cursor.position))
            except ValueError:
                parsed = None
            if parsed is None:
                raise NotFound(self.invalid_cursor_message)
        return cursor
