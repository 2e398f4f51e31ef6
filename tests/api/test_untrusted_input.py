"""Hostile input at the API boundary: HTTP framing, URL parts and run params.

Framing is tested against real servers over raw sockets (gunicorn in its own process, and the
live server thread); URL parts and params run on the suite's database, which is PostgreSQL in
CI's second pass, where a NUL used to reach the database and read as an outage.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from plugins_app import pipeline, services
from plugins_app.models import PluginRun
from plugins_app.tokens import issue_token
from tests.concurrency_support import database_url

ROOT = Path(__file__).resolve().parents[2]


# --- HTTP framing -------------------------------------------------------------------------


def raw_request(address: tuple[str, int], request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are and read the answer to the end: (status, headers, body)."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunked(body)
    return int(status_line.split()[1]), headers, body


def dechunked(body: bytes) -> bytes:
    """A chunked response body, decoded (gunicorn chunks bodies without a Content-Length)."""
    decoded = b""
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return decoded
        decoded, body = decoded + body[:size], body[size + 2 :]


def post_runs(token: str, body_framing: bytes) -> bytes:
    return (
        b"POST /v1/plugins/echo/runs?wait=30 HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Authorization: Token " + token.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Connection: close\r\n" + body_framing
    )


PARAMS = b'{"params": {"city": "Paris"}}'
CHUNKED = (
    b"Transfer-Encoding: chunked\r\n\r\n"
    + f"{len(PARAMS):x}".encode()
    + b"\r\n"
    + PARAMS
    + b"\r\n0\r\n\r\n"
)
WITH_LENGTH = f"Content-Length: {len(PARAMS)}\r\n\r\n".encode() + PARAMS


@pytest.fixture
def echo_plugin(plugin_dir, settings, transactional_db) -> Iterator[Path]:
    settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir.path)]
    settings.PORTAL_RUN_EXECUTOR = "inline"
    plugin_dir.add("echo", "def run(**params):\n    return params\n")
    pipeline.load_plugins(actor="test")
    yield plugin_dir.path
    pipeline.discard_warm_hosts()


@pytest.fixture
def operator_token(make_user, transactional_db) -> str:
    return issue_token(user=make_user("operator", "plugins_app.run_plugin"))


@pytest.fixture
def gunicorn(echo_plugin, tmp_path) -> Iterator[tuple[str, int]]:
    """gunicorn serving portal.wsgi on the test database, on a socket bound before it starts."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.set_inheritable(True)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "SECRET_KEY": "gunicorn-test-key-" + "x" * 40,
        "PORTAL_PLUGIN_DIRS": str(echo_plugin),
        "PORTAL_RUN_EXECUTOR": "inline",
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "portal.wsgi",
            "--bind",
            f"fd://{listener.fileno()}",
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        pass_fds=[listener.fileno()],
    )
    # Connections queue on the listening socket until gunicorn accepts them: no polling.
    yield listener.getsockname()
    server.terminate()
    server.wait(timeout=30)
    listener.close()


@pytest.fixture(params=["gunicorn", "live_server"])
def server(request) -> tuple[str, int]:
    """A real server on a real socket: gunicorn (production) or Django's live server thread."""
    if request.param == "gunicorn":
        return request.getfixturevalue("gunicorn")
    request.getfixturevalue("echo_plugin")
    live = request.getfixturevalue("live_server")
    return (live.thread.host, live.thread.port)


@pytest.mark.portal_processes
class TestChunkedBody:
    def test_chunked_body__411_asking_for_content_length_and_no_run(self, server, operator_token):
        """A chunked body is refused with 411 saying to send Content-Length; nothing runs."""
        status, headers, body = raw_request(server, post_runs(operator_token, CHUNKED))
        assert status == 411
        assert headers["content-type"] == "application/json"
        assert "Content-Length" in json.loads(body)["detail"]
        assert PluginRun.objects.count() == 0

    def test_content_length_body__params_reach_the_plugin(self, server, operator_token):
        """The same request with Content-Length runs the plugin with its params."""
        status, _, body = raw_request(server, post_runs(operator_token, WITH_LENGTH))
        assert status == 200, body
        assert json.loads(body)["result"] == {"city": "Paris"}


# --- URL parts ------------------------------------------------------------------------------

BAD_NAMES = {
    "nul": "%00",
    "nul inside": "ok%00x",
    "invalid utf-8": "%ED%B3%BF",
    "over-long": "n" * 5000,
}


@pytest.mark.django_db
class TestBadNamesInUrls:
    @pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
    def test_health__404_and_no_outage(self, api_client, make_plugin, name):
        """A name no plugin can have is a 404; health stays fresh (no outage back-off)."""
        make_plugin("ok")
        response = api_client.get(f"/v1/plugins/{name}/health")
        assert response.status_code == 404
        assert "not found" in response.json()["detail"]
        fresh = api_client.get("/v1/plugins/ok/health")
        assert (fresh.status_code, fresh.json()["stale"]) == (200, False)

    @pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
    def test_runs_list__404(self, api_client, name):
        """The run list of an impossible name is a 404, not a 503."""
        assert api_client.get(f"/v1/plugins/{name}/runs").status_code == 404

    @pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
    def test_writes__404_and_nothing_queued(self, operator_client, name):
        """A run or reload of an impossible name is a 404; no run is created."""
        runs = operator_client.post(f"/v1/plugins/{name}/runs", {}, format="json")
        reload = operator_client.post(f"/v1/plugins/{name}/reload")
        assert (runs.status_code, reload.status_code) == (404, 404)
        assert PluginRun.objects.count() == 0

    @pytest.mark.parametrize("query", ["state=%00", "enabled=%00", "state=%ED%B3%BF"])
    def test_list_filters__400(self, api_client, query):
        """A NUL or broken text in a filter is a 400 naming it; no outage."""
        response = api_client.get(f"/v1/plugins?{query}")
        assert response.status_code == 400
        assert "stale" not in response.json()

    @pytest.mark.parametrize("cursor", ["%00", "cD0lMDA%3D", "%ED%B3%BF"])
    def test_run_cursor__404_not_503(self, api_client, make_plugin, cursor):
        """A cursor with a NUL (raw or inside its encoding) is the bad-cursor 404."""
        make_plugin("ok")
        response = api_client.get(f"/v1/plugins/ok/runs?cursor={cursor}")
        assert response.status_code == 404
        assert "cursor" in response.json()["detail"]


# --- run params -----------------------------------------------------------------------------

BAD_PARAMS = {
    "lone surrogate": (r'{"params": {"text": "\udcff"}}', "params.text", "surrogate"),
    "nul": (r'{"params": {"text": "a\u0000b"}}', "params.text", "NUL"),
    "deep in a list": (
        r'{"params": {"pages": [1, {"t": ["ok", "\ud800"]}]}}',
        "params.pages[1].t[1]",
        "surrogate",
    ),
    "in a nested key": (r'{"params": {"map": {"k\u0000": 1}}}', "params.map", "NUL"),
    "key surrogate": (r'{"params": {"map": {"\udc80": 1}}}', "params.map", "surrogate"),
}


@pytest.mark.django_db
class TestBadParams:
    @pytest.mark.parametrize(
        ("body", "where", "problem"), BAD_PARAMS.values(), ids=BAD_PARAMS.keys()
    )
    def test_post__400_naming_the_place_and_nothing_stored(
        self, operator_client, make_plugin, body, where, problem
    ):
        """NUL or a lone surrogate anywhere in params: 400 saying where and what; no run."""
        make_plugin("ok")
        response = operator_client.post(
            "/v1/plugins/ok/runs", data=body, content_type="application/json"
        )
        assert response.status_code == 400, response.content
        detail = response.json()["detail"]
        assert where in detail and problem in detail
        assert PluginRun.objects.count() == 0

    def test_stored_surrogate__run_api_and_admin_pages_render(
        self, api_client, admin_client, make_plugin, finish_run
    ):
        """A run stored with a lone surrogate and a NUL (older data) renders in API and admin."""
        if connection.vendor != "sqlite":
            pytest.skip("PostgreSQL cannot store a lone surrogate or NUL in jsonb at all")
        make_plugin("ok")
        run = services.run_queue(name="ok", params={"text": "\udcff", "nul": "a\x00b"}, actor="t")
        api = api_client.get(f"/v1/runs/{run.pk}")
        assert api.status_code == 200
        assert api.json()["params"] == {"text": "\udcff", "nul": "a\x00b"}
        page = admin_client.get(f"/admin/plugins_app/pluginrun/{run.pk}/change/")
        assert page.status_code == 200
        assert "\\udcff" in page.content.decode()
        finished = finish_run("ok", result={"out": "\udcff"})
        assert api_client.get(f"/v1/runs/{finished.pk}").json()["result"] == {"out": "\udcff"}
        admin_result = admin_client.get(f"/admin/plugins_app/pluginrun/{finished.pk}/change/")
        assert admin_result.status_code == 200


class TestValueRefusedByTheDatabase:
    def test_data_error__400_not_a_database_outage(self):
        """A value the database refuses (DataError) is the request's fault: 400, not 503."""
        from django.db import DataError

        from plugins_app.api.errors import api_exception_handler

        error = DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        response = api_exception_handler(error, {})
        assert response.status_code == 400
        assert "refused a value" in response.data["detail"]
        assert "Retry-After" not in response
