"""Health and operations API (`/v1/...`): thin views over the selectors and the pipeline.

Health reads answer from the node's snapshot (plugins_app/health_snapshot.py), never from the
database, and never 500; everything else maps domain errors to 404/409 and bad input to 400/413
(api/errors.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DataError
from django.http import Http404, HttpResponse, HttpResponseBase
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import APIException, UnsupportedMediaType
from rest_framework.permissions import SAFE_METHODS, AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from plugins_app import selectors
from plugins_app.api import schema as _schema_extensions  # noqa: F401 - registers them
from plugins_app.api import serializers as api
from plugins_app.api.authentication import TokenAuthentication
from plugins_app.api.errors import ServiceUnavailable
from plugins_app.api.policy import (
    RUN_PLUGIN_PERMISSION,
    CappedJSONParser,
    PluginWriteThrottle,
    PublicRead,
    RunCursorPagination,
    json_object,
    write_permissions,
)
from plugins_app.api.renderers import SafeJSONRenderer
from plugins_app.api.wait_slots import wait_slots
from plugins_app.errors import PluginError, PluginNotFound
from plugins_app.health_refresher import current_snapshot
from plugins_app.health_snapshot import Snapshot, iso, reader

logger = logging.getLogger("plugins_app.health")

STALE_HEADER = "X-Health-Stale"
CHECKED_AT_HEADER = "X-Health-Checked-At"
NO_SNAPSHOT_RETRY_AFTER_S = "1"

_ERRORS = {
    400: OpenApiResponse(api.ErrorSerializer, description="Invalid input; the message names it."),
    401: OpenApiResponse(api.ErrorSerializer, description="No valid credentials."),
    403: OpenApiResponse(api.ErrorSerializer, description="Missing permission or CSRF token."),
    404: OpenApiResponse(api.ErrorSerializer, description="Unknown plugin or run."),
    409: OpenApiResponse(api.ErrorSerializer, description="Disabled or UNAVAILABLE: the reason."),
    413: OpenApiResponse(api.ErrorSerializer, description="Body over PORTAL_API_MAX_BODY_BYTES."),
    415: OpenApiResponse(api.ErrorSerializer, description="The body is not JSON."),
    429: OpenApiResponse(api.ErrorSerializer, description="Over PORTAL_API_WRITE_RATE."),
    503: OpenApiResponse(api.ErrorSerializer, description="The database cannot be reached."),
}
_NO_SNAPSHOT = OpenApiResponse(
    api.NoSnapshotSerializer,
    description=(
        "This node has no health snapshot yet: its refresher has not read the database since "
        "the node first started."
    ),
)
_STALE_HEADERS = [
    OpenApiParameter(
        STALE_HEADER,
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=True,
        description="`true` when the answer comes from the snapshot.",
    ),
]


NAME_PARAMETER = OpenApiParameter(
    "name",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The plugin's name.",
    examples=[OpenApiExample("A plugin", value="ocr")],
)


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: _ERRORS[code] for code in codes}


def api_actor(request: Request) -> str:
    return f"api:{request.user.get_username()}"


def _is_client_error(exc: Exception) -> bool:
    if isinstance(exc, APIException):
        return exc.status_code < 500
    # DataError: the database answered, refusing a value; not a reason to answer stale.
    return isinstance(exc, Http404 | DjangoPermissionDenied | PluginError | DataError)


class ApiView(APIView):
    """Token or session (with CSRF) authentication. Reads follow `permission_classes`: an
    authenticated user (DRF's default) unless the view opts in with `[PublicRead]`; writes
    always need `plugins_app.run_plugin` and are throttled."""

    authentication_classes = [TokenAuthentication, SessionAuthentication]
    parser_classes = [CappedJSONParser]
    renderer_classes = [SafeJSONRenderer]

    def is_write(self) -> bool:
        """A write this view serves; a method it does not serve is a 405 whoever asks."""
        method = self.request.method
        return method is not None and method not in SAFE_METHODS and hasattr(self, method.lower())

    def get_permissions(self):
        if self.is_write():
            return write_permissions()
        method = self.request.method
        if method is None or not hasattr(self, method.lower()):
            return [PublicRead()]  # a 405 follows, which tells no more than a public read
        return super().get_permissions()

    def reads_are_public(self) -> bool:
        """This view's reads need no credentials: it opted in and the setting leaves them so."""
        return PublicRead in self.permission_classes and PublicRead.open()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if "name" in kwargs:
            # A NUL reaching PostgreSQL is a DataError, which read as a database outage.
            selectors.checked_name(kwargs["name"])

    def get_throttles(self):
        return [PluginWriteThrottle()] if self.is_write() else []

    def perform_authentication(self, request: Request) -> None:
        # Public reads skip the session and token tables, so they answer while the database is down.
        if self.is_write() or not self.reads_are_public():
            request.user  # noqa: B018 - evaluating it authenticates

    def body(self, request: Request) -> dict[str, Any]:
        """The JSON object sent, `{}` when there is no body."""
        if request.stream is not None and request.content_type == "":
            raise UnsupportedMediaType(
                "", detail="Send the body as JSON with the header Content-Type: application/json."
            )
        return json_object(request.data)


class HealthApiView(ApiView):
    """A health read: from the node's snapshot, never the database, never a 500."""

    def dispatch(self, request, *args: Any, **kwargs: Any):
        try:
            return super().dispatch(request, *args, **kwargs)
        except Exception as exc:  # raised where DRF's handling does not reach (finalize_response)
            if not self.may_answer_without_access_check():
                raise
            logger.error("Health read failed; answering from the snapshot", exc_info=exc)
            return self.plain_json(self.from_snapshot(reader.current()))

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.access_checked = True

    def may_answer_without_access_check(self) -> bool:
        return self.reads_are_public() or getattr(self, "access_checked", False)

    def plain_json(self, response: HttpResponseBase) -> HttpResponseBase:
        """Render with JSON directly, bypassing the negotiation that may be what failed."""
        if not isinstance(response, Response):
            return response  # already rendered
        response.accepted_renderer = SafeJSONRenderer()
        response.accepted_media_type = "application/json"
        # DRF's Response reads renderer_context when rendering; its stubs do not declare it.
        context = {"view": self, "response": response}
        response.renderer_context = context  # type: ignore[attr-defined]
        return response

    def handle_exception(self, exc: Exception) -> Response:
        if _is_client_error(exc):
            return super().handle_exception(exc)
        if not self.may_answer_without_access_check():
            # Credentials could not be checked: refuse rather than show health unauthenticated.
            return super().handle_exception(
                ServiceUnavailable(
                    "Cannot check your credentials because the database cannot be read "
                    "(retry shortly)"
                )
            )
        logger.error("Health read failed; answering from the snapshot", exc_info=exc)
        return self.from_snapshot(reader.current())  # type: ignore[return-value]

    def get_snapshot_response(self) -> HttpResponseBase:
        return self.from_snapshot(current_snapshot())

    def from_snapshot(self, snapshot: Snapshot | None) -> HttpResponseBase:
        raise NotImplementedError

    @staticmethod
    def answer(key: tuple, snapshot: Snapshot, now: float, records: Callable[[], Any]):
        """The JSON body for `key`, rendered once per snapshot and staleness (the hot path)."""
        since = snapshot.stale_since(now)
        body = snapshot.rendered.get((*key, since))
        if body is None:
            body = snapshot.rendered[(*key, since)] = SafeJSONRenderer().render(records())
        response = HttpResponse(body, content_type="application/json")
        response[CHECKED_AT_HEADER] = iso(snapshot.read_at)
        if since is not None:
            response[STALE_HEADER] = "true"
        return response

    @staticmethod
    def no_snapshot() -> Response:
        body = {
            "detail": (
                "Plugin health is unknown: this node has no health snapshot yet (its refresher "
                "has not read the database since the node first started); retry shortly, and "
                "check the database if it lasts"
            ),
            "stale": True,
            "checked_at": None,
        }
        headers = {STALE_HEADER: "true", "Retry-After": NO_SNAPSHOT_RETRY_AFTER_S}
        return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers)


class PluginListApi(HealthApiView):
    permission_classes = [PublicRead]

    @extend_schema(
        operation_id="plugins_list",
        summary="Every plugin's health record",
        description=(
            "All plugins, FAILED and UNAVAILABLE included, sorted by name, from the node's health "
            "snapshot (refreshed every PORTAL_HEALTH_REFRESH_S). When the snapshot is old or its "
            f"refresh failed the records say `stale: true` and the answer has `{STALE_HEADER}: "
            "true`."
        ),
        parameters=[api.PluginListQuery],
        responses={
            200: OpenApiResponse(api.HealthRecordSerializer(many=True)),
            **errors(400, 401, 403),
            503: _NO_SNAPSHOT,
        },
    )
    def get(self, request: Request) -> HttpResponseBase:
        self.filters(request)  # a bad filter is a 400 before anything is read
        return self.get_snapshot_response()

    @staticmethod
    def filters(request) -> dict[str, Any]:
        params = getattr(request, "query_params", None) or request.GET  # DRF's or Django's
        if not params:
            return {"state": None, "enabled": None}  # the probes' case: nothing to validate
        query = api.validated_query(api.PluginListQuery, params)
        return {"state": query.get("state") or None, "enabled": query.get("enabled")}

    def from_snapshot(self, snapshot: Snapshot | None) -> HttpResponseBase:
        if snapshot is None or not snapshot.read_at:
            return self.no_snapshot()
        try:
            filters = self.filters(self.request)
        except APIException:
            filters = {"state": None, "enabled": None}
        state, enabled = filters["state"], filters["enabled"]
        now = time.time()
        return self.answer(
            ("list", state, enabled),
            snapshot,
            now,
            lambda: [
                snapshot.served(record, now)
                for record in snapshot.document["records"]
                if (state is None or record["state"] == state)
                and (enabled is None or record["enabled"] == enabled)
            ],
        )


class PluginHealthApi(HealthApiView):
    permission_classes = [PublicRead]

    @extend_schema(
        operation_id="plugins_health",
        summary="One plugin's health record",
        description=(
            "From the node's health snapshot; 404 for a plugin that is not in it (not "
            "registered when the snapshot was read). `stale: true` as in the list."
        ),
        parameters=[NAME_PARAMETER],
        responses={
            200: api.HealthRecordSerializer,
            **errors(401, 403, 404),
            503: _NO_SNAPSHOT,
        },
    )
    def get(self, request: Request, name: str) -> HttpResponseBase:
        return self.get_snapshot_response()

    def from_snapshot(self, snapshot: Snapshot | None) -> HttpResponseBase:
        if snapshot is None or not snapshot.read_at:
            return self.no_snapshot()
        name = self.kwargs.get("name", "")
        record = snapshot.by_name.get(name)
        now = time.time()
        stale = snapshot.stale_since(now) is not None
        if record is None:
            response = Response(
                {"detail": str(PluginNotFound(name))}, status=status.HTTP_404_NOT_FOUND
            )
            if stale:
                response[STALE_HEADER] = "true"
            return response
        return self.answer(("record", name), snapshot, now, lambda: snapshot.served(record, now))


class PluginRunsApi(ApiView):
    """GET: the plugin's runs, newest first. POST: queue a run."""

    permission_classes = [PublicRead]  # the GET; the POST is a write

    @extend_schema(
        operation_id="plugins_runs_list",
        summary="A plugin's runs, newest first",
        parameters=[NAME_PARAMETER, api.RunListQuery],
        responses={
            200: inline_serializer(
                "PaginatedRunSummaryList",
                {
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": api.RunSummarySerializer(many=True),
                },
            ),
            **errors(400, 401, 403, 404, 503),
        },
    )
    def get(self, request: Request, name: str) -> Response:
        api.validated_query(api.RunListQuery, request.query_params)
        runs = selectors.plugin_run_summaries(name=name)
        paginator = RunCursorPagination()
        page = paginator.paginate_queryset(runs, request, view=self)
        return paginator.get_paginated_response(api.RunSummarySerializer(page, many=True).data)

    @extend_schema(
        operation_id="plugins_runs_create",
        summary="Queue a run of the plugin",
        description=(
            "Queues a run at once and answers 202 with it and its `Location`. With "
            "`?wait=SECONDS`, waits up to that long: 200 with the finished run, or 202 with the "
            "run still going. 409 with the reason when the plugin is disabled or UNAVAILABLE. "
            "429 when too many `?wait=` requests already wait (PORTAL_API_MAX_WAITING in all, "
            "PORTAL_API_MAX_WAITING_PER_CLIENT per user, per server process): nothing queued."
        ),
        parameters=[NAME_PARAMETER, api.RunSubmitQuery],
        request=api.RunSubmitBody,
        responses={
            200: OpenApiResponse(api.RunSerializer, description="Finished within `wait`."),
            202: OpenApiResponse(api.RunSerializer, description="Queued, or still running."),
            **errors(400, 401, 403, 404, 409, 413, 415, 429, 503),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        from plugins_app import pipeline  # the run pipeline; imported late to keep reads light

        query = api.validated_query(api.RunSubmitQuery, request.query_params)
        body = api.validated(api.RunSubmitBody, self.body(request), where="request body")
        slot = (
            wait_slots.hold(
                f"user:{request.user.pk}",
                limit=settings.PORTAL_API_MAX_WAITING,
                per_client=settings.PORTAL_API_MAX_WAITING_PER_CLIENT,
            )
            if query.get("wait")
            else contextlib.nullcontext()
        )
        with slot:
            run = pipeline.submit_run(name=name, params=body["params"], actor=api_actor(request))
            answer: int = status.HTTP_202_ACCEPTED
            if query.get("wait"):
                run = pipeline.wait_for_run(run_id=run.pk, timeout_s=query["wait"])
                answer = status.HTTP_200_OK if run.is_finished else status.HTTP_202_ACCEPTED
        location = reverse("plugins_api:run-detail", kwargs={"run_id": run.pk})
        return Response(run_data(request, run), status=answer, headers={"Location": location})


class PluginReloadApi(ApiView):
    """POST: re-check the plugin now; it answers with the plugin's health after the check."""

    @extend_schema(
        operation_id="plugins_reload",
        summary="Re-check the plugin (import, requirements, setup) in the sandbox",
        parameters=[NAME_PARAMETER],
        request=api.EmptyBody,
        responses={
            200: OpenApiResponse(
                api.HealthRecordSerializer, description="Its health after the re-check."
            ),
            **errors(400, 401, 403, 404, 409, 413, 415, 429, 503),
        },
    )
    def post(self, request: Request, name: str) -> Response:
        from plugins_app import pipeline

        api.validated(api.EmptyBody, self.body(request), where="request body")
        plugin = pipeline.reload_plugin(name=name, actor=api_actor(request))
        return Response(selectors.health_record(plugin))


class RunDetailApi(ApiView):
    permission_classes = [PublicRead]

    @extend_schema(
        operation_id="runs_retrieve",
        summary="One run",
        description="The plugin's traceback and output tails need the run_plugin permission.",
        responses={200: api.RunSerializer, **errors(401, 403, 404, 503)},
    )
    def get(self, request: Request, run_id: int) -> Response:
        run = selectors.run_get(run_id=run_id)
        return Response(run_data(request, run))


def run_data(request: Request, run) -> dict[str, Any]:
    user = request.user
    show_output = bool(user and user.is_authenticated and user.has_perm(RUN_PLUGIN_PERMISSION))
    return api.RunSerializer(run, context={"show_output": show_output}).data


class BenchmarkConstantApi(APIView):
    """Baseline for benchmarks/api_bench.py: a constant health-sized dict, no database."""

    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    PAYLOAD = {
        "name": "benchmark-constant",
        "state": "INITIALIZED",
        "description": "A constant record the size of a health record",
        "reason": None,
        "version": "1.0.0",
        "uptime_seconds": 12345.678,
        "success_count": 1000,
        "error_count": 10,
        "enabled": True,
        "consecutive_failures": 0,
        "last_run_at": "2025-01-01T00:00:00Z",
        "last_success_at": "2025-01-01T00:00:00Z",
        "last_error_at": "2025-01-01T00:00:00Z",
        "last_duration_ms": 12.5,
        "avg_duration_ms": 11.25,
        "checked_at": "2025-01-01T00:00:00Z",
        "stale": False,
        "stale_since": None,
    }

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response(self.PAYLOAD)
