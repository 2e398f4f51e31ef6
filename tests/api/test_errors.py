"""Errors under /v1/ are JSON with the right status and never carry a traceback."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.http import HttpResponse
from django.urls import include, path

from plugins_app import selectors

pytestmark = pytest.mark.django_db


def _plain_django_view_that_breaks(request):
    raise RuntimeError("secret internals: /srv/portal/settings.py password=hunter2")


def _plain_django_view_ok(request):
    return HttpResponse("ok")


# Used by the tests marked `urls(__name__)`: the real API plus plain Django views under /v1/.
urlpatterns = [
    path("v1/_test/breaks", _plain_django_view_that_breaks),
    path("v1/_test/ok", _plain_django_view_ok),
    path("v1/", include("plugins_app.urls")),
]


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    text = response.content.decode()
    assert "Traceback" not in text and "hunter2" not in text and "File \\" not in text
    return body


class TestMethodNotAllowed:
    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("put", "/v1/plugins", "GET"),
            ("post", "/v1/plugins", "GET"),
            ("delete", "/v1/plugins/x/health", "GET"),
            ("patch", "/v1/runs/1", "GET"),
            ("get", "/v1/plugins/x/reload", "POST"),
            ("delete", "/v1/plugins/x/runs", "GET, POST"),
        ],
    )
    def test_wrong_method__405_with_allow(self, api_client, method, path, allowed):
        """A wrong method is a 405 naming the method, with an Allow header."""
        response = getattr(api_client, method)(path)
        body = assert_json_error(response, 405)
        assert method.upper() in body["detail"]
        assert all(m in response["Allow"] for m in allowed.split(", "))


class TestNotFound:
    @pytest.mark.parametrize(
        "path", ["/v1/nothing", "/v1/runs/abc", "/v1/plugins/a/b/health", "/v1/runs/-1"]
    )
    def test_unknown_path__json_404(self, api_client, path):
        """A path no endpoint serves is a JSON 404 pointing at the docs."""
        body = assert_json_error(api_client.get(path), 404)
        assert "/v1/docs/" in body["detail"]

    def test_unknown_run__404_naming_it(self, api_client):
        """An unknown run id is a 404 that names it, even one beyond the id column's range."""
        assert assert_json_error(api_client.get("/v1/runs/424242"), 404) == {
            "detail": "Run 424242 not found"
        }
        huge = 2**70
        assert assert_json_error(api_client.get(f"/v1/runs/{huge}"), 404) == {
            "detail": f"Run {huge} not found"
        }


@pytest.mark.urls(__name__)
class TestSafetyNet:
    @pytest.mark.parametrize("debug", [False, True])
    def test_non_drf_error__json_500_without_traceback(self, client, settings, debug):
        """A plain Django view under /v1/ that raises gives a JSON 500, even with DEBUG on."""
        settings.DEBUG = debug
        client.raise_request_exception = False
        body = assert_json_error(client.get("/v1/_test/breaks"), 500)
        assert "logged" in body["detail"]

    def test_drf_view_unexpected_error__json_500(self, api_client, settings, monkeypatch):
        """An unexpected error in a non-health API view is a JSON 500 with no traceback."""
        settings.DEBUG = True

        def broken(**kwargs):
            raise RuntimeError("secret internals: password=hunter2")

        monkeypatch.setattr(selectors, "run_get", broken)
        api_client.raise_request_exception = False
        assert_json_error(api_client.get("/v1/runs/1"), 500)

    def test_database_error_outside_health__503(self, api_client, monkeypatch):
        """A database error in a non-health endpoint is a 503 asking to retry, not a 500."""

        def broken(**kwargs):
            raise OperationalError("could not connect to server: password=hunter2")

        monkeypatch.setattr(selectors, "run_get", broken)
        response = api_client.get("/v1/runs/1")
        body = assert_json_error(response, 503)
        assert "retry" in body["detail"]
        assert response["Retry-After"] == "5"

    def test_bad_host__json_400(self, client):
        """Django's own 400 (a disallowed Host header) is JSON under /v1/."""
        client.raise_request_exception = False
        assert_json_error(client.get("/v1/plugins", HTTP_HOST="evil.example.com"), 400)

    def test_outside_the_api__untouched(self, client):
        """Successes pass through untouched, and pages outside /v1/ keep Django's error pages."""
        assert client.get("/v1/_test/ok").content == b"ok"
        response = client.get("/admin/nothing-here")
        assert not response["Content-Type"].startswith("application/json")
