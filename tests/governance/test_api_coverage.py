"""The /v1/ API's governance: every URL fuzzed, outage tests hit health, public only by choice."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from plugins_app.api.views import ApiView

# Imported at collection, as pytest imports it: the schema loads through the WSGI app.
from tests.api import test_schema_fuzz

TESTS = Path(__file__).resolve().parents[1]
FUZZ_MODULE = TESTS / "api" / "test_schema_fuzz.py"
OUTAGE_MODULE = TESTS / "api" / "test_outage.py"
API_PREFIX = "/v1/"
# The schema and its docs page describe the API; test_schema_fuzz.py checks them itself.
SCHEMA_VIEWS = (SpectacularAPIView, SpectacularSwaggerView, SpectacularRedocView)
HEALTH_RECORD_REF = "#/components/schemas/HealthRecord"
NOT_OPERATIONS = {"options", "head", "trace"}

Route = tuple[str, type | None, Any]  # OpenAPI-style path, view class, view callback


def _route_text(pattern: URLPattern | URLResolver) -> str:
    """A pattern's route as OpenAPI writes it: `<str:name>` and `(?P<name>...)` → `{name}`."""
    text = str(pattern.pattern)
    text = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", text)
    text = re.sub(r"\(\?P<([^>]+)>[^)]*\)", r"{\1}", text)
    return text.lstrip("^").rstrip("$").replace("/?", "").replace("\\", "")


def v1_routes(patterns: list[Any] | None = None, prefix: str = "/") -> Iterator[Route]:
    """Every URL pattern whose path starts with /v1/, trailing slash dropped."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        path = prefix + _route_text(pattern)
        if isinstance(pattern, URLResolver):
            yield from v1_routes(pattern.url_patterns, path)
        elif path.startswith(API_PREFIX):
            callback = pattern.callback
            yield path.rstrip("/"), getattr(callback, "view_class", None), callback


def methods_of(view_class: type | None) -> set[str]:
    """HTTP methods a class-based view answers, OPTIONS/HEAD aside; function views: GET."""
    if view_class is None:
        return {"get"}
    names = getattr(view_class, "http_method_names", [])
    return {name for name in names if hasattr(view_class, name)} - NOT_OPERATIONS


def uncovered(routes: list[Route], fuzzed: set[tuple[str, str]]) -> list[str]:
    """'METHOD path' for each /v1/ operation the fuzz run does not exercise."""
    missing = set()
    for path, view_class, _ in routes:
        if view_class is not None and issubclass(view_class, SCHEMA_VIEWS):
            continue
        missing |= {
            f"{method.upper()} {path}"
            for method in methods_of(view_class)
            if (path, method) not in fuzzed
        }
    return sorted(missing)


def health_paths(raw_schema: dict[str, Any]) -> set[str]:
    """Paths whose GET answers with health records (one, or a list of them)."""
    found = set()
    for path, item in raw_schema["paths"].items():
        ok = item.get("get", {}).get("responses", {}).get("200", {})
        if HEALTH_RECORD_REF in json.dumps(ok):
            found.add(path)
    return found


def requested_paths(source: str) -> set[str]:
    """Every /v1/... URL a test module's source names, placeholders filled, query dropped."""
    tree = ast.parse(source)
    f_string_parts = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    paths = set()
    for node in ast.walk(tree):
        if id(node) in f_string_parts:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            # "1" fits every path converter (str, int, slug), so the path still resolves.
            text = "".join(
                str(part.value) if isinstance(part, ast.Constant) else "1" for part in node.values
            )
        else:
            continue
        if text.startswith(API_PREFIX):
            paths.add(text.split("?")[0])
    return paths


def route_of(path: str) -> str | None:
    """The OpenAPI-style route a concrete path resolves to, or None."""
    try:
        match = resolve(path)
    except Resolver404:
        return None
    for route, _, callback in v1_routes():
        shape = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(route))
        if callback is match.func and re.fullmatch(shape, path.rstrip("/")):
            return route
    return None


def fuzz_schema() -> Any:
    """The schemathesis schema object the fuzz tests parametrize."""
    return test_schema_fuzz.schema


def fuzzed_operations(schema: Any) -> set[tuple[str, str]]:
    """(path, method) of every operation schemathesis generates cases for."""
    operations = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations.add((operation.full_path.rstrip("/"), operation.method.lower()))
    return operations


class TestEveryV1UrlFuzzed:
    def test_fuzz_tests__exercise_every_v1_operation(self):
        """Each method of each /v1/ URL is an operation of the schema the fuzz tests run."""
        routes = list(v1_routes())
        assert routes, "no URL under /v1/"
        assert uncovered(routes, fuzzed_operations(fuzz_schema())) == []

    def test_fuzz_module__runs_the_schema(self):
        """The fuzz module parametrizes a test with that schema, so the operations really run."""
        source = FUZZ_MODULE.read_text()
        assert "@schema.parametrize()" in source
        assert "call_and_validate" in source

    def test_route_missing_from_schema__reported(self):
        """A /v1/ URL the fuzz run does not exercise is named, with its method."""
        routes = list(v1_routes())
        fuzzed = fuzzed_operations(fuzz_schema())
        health = "/v1/plugins/{name}/health"
        assert uncovered(routes, fuzzed - {(health, "get")}) == [f"GET {health}"]
        assert len(uncovered(routes, set())) == len(fuzzed)


class TestOutageTestsHitHealth:
    def test_outage_tests__request_every_health_endpoint(self):
        """The database-outage tests call each endpoint that returns health records."""
        health = health_paths(fuzz_schema().raw_schema)
        assert health, f"no operation answers with {HEALTH_RECORD_REF}"
        hit = {route_of(path) for path in requested_paths(OUTAGE_MODULE.read_text())}
        assert health - hit == set()

    def test_outage_module_without_health_request__reported(self):
        """A module that never requests a health endpoint leaves it unhit."""
        source = 'def test_x(api_client):\n    api_client.get(f"/v1/runs/{1}?x=1")\n'
        hit = {route_of(path) for path in requested_paths(source)}
        assert hit == {"/v1/runs/{run_id}"}
        assert "/v1/plugins/{name}/health" in health_paths(fuzz_schema().raw_schema) - hit


# Who may call each /v1/ operation with no credentials. Everything else needs a login or token.
PUBLIC_READS = {  # public unless PORTAL_API_READS_REQUIRE_AUTH is on
    ("GET", "/v1/plugins"),
    ("GET", "/v1/plugins/{name}/health"),
    ("GET", "/v1/plugins/{name}/runs"),
    ("GET", "/v1/runs/{run_id}"),
    ("GET", "/v1/workers"),
}
ALWAYS_PUBLIC = {("GET", "/v1/schema"), ("GET", "/v1/docs")}  # describe the API, hold no data
DENIED = {401, 403}


def v1_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, view_class, _ in v1_routes()
        for method in methods_of(view_class)
    }


def anonymous_answers(client: Any, plugin: str, run_id: int) -> dict[tuple[str, str], int]:
    """The status of an anonymous call of every /v1/ operation, placeholders filled in."""
    answers = {}
    for method, route in sorted(v1_operations()):
        # With the slash: every /v1/ URL answers there (the schema and docs only there).
        path = route.replace("{name}", plugin).replace("{run_id}", str(run_id)) + "/"
        call = getattr(client, method.lower())
        answers[(method, route)] = call(path, format="json").status_code
    return answers


@pytest.mark.django_db
class TestV1Permissions:
    def test_every_v1_operation__public_only_as_listed(
        self, api_client, make_plugin, finish_run, settings
    ):
        """Anonymous callers reach exactly the listed operations; all others are refused."""
        make_plugin("ocr")
        run_id = finish_run("ocr").pk
        assert v1_operations() >= PUBLIC_READS | ALWAYS_PUBLIC
        answers = anonymous_answers(api_client, "ocr", run_id)
        public = {operation for operation, code in answers.items() if code not in DENIED}
        assert public == PUBLIC_READS | ALWAYS_PUBLIC
        assert {answers[operation] for operation in public} == {200}
        settings.PORTAL_API_READS_REQUIRE_AUTH = True
        answers = anonymous_answers(api_client, "ocr", run_id)
        assert {operation for operation, code in answers.items() if code not in DENIED} == (
            ALWAYS_PUBLIC
        )

    def test_default_permission__authenticated(self):
        """A DRF view that says nothing about permissions needs an authenticated user."""
        default = api_settings.DEFAULT_PERMISSION_CLASSES
        assert default == [IsAuthenticated]

    def test_public_views__opt_in_on_the_view(self):
        """Each view serving a public operation names its permission itself; no other does."""
        opted_in = {
            path
            for path, view_class, callback in v1_routes()
            if view_class is not None
            and issubclass(view_class, APIView)
            and permission_classes_of(view_class, callback)
            != api_settings.DEFAULT_PERMISSION_CLASSES
        }
        assert opted_in == {path for _, path in PUBLIC_READS | ALWAYS_PUBLIC}

    @pytest.mark.parametrize("base", [ApiView, APIView])
    def test_new_view__authenticated_by_default(self, base):
        """A new read view, on the portal's base or DRF's, refuses an anonymous caller."""

        class NewApi(base):
            def get(self, request):
                return Response({"secret": True})

        response = NewApi.as_view()(APIRequestFactory().get("/v1/new"))
        assert response.status_code in DENIED


def permission_classes_of(view_class: type[APIView], callback: Any) -> list[type]:
    """The permission classes a routed view runs with: its own, or those passed to as_view."""
    initkwargs = getattr(callback, "initkwargs", {})
    return list(initkwargs.get("permission_classes", view_class.permission_classes))
