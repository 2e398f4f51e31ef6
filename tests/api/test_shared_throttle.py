"""The write throttle counted across processes: two gunicorn servers on one Redis (real)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis
from django.db import connection

from plugins_app.tokens import issue_token
from tests.concurrency_support import database_url

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = [
    pytest.mark.redis,
    pytest.mark.portal_processes,
    pytest.mark.django_db(transaction=True),
]


@contextmanager
def gunicorn(env: dict[str, str]) -> Iterator[str]:
    """A gunicorn server (1 worker) on a socket of its own; its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.set_inheritable(True)
    argv = ["-m", "gunicorn", "portal.wsgi", "--bind", f"fd://{listener.fileno()}"]
    server = subprocess.Popen(
        [sys.executable, *argv, "--workers", "1", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        pass_fds=[listener.fileno()],
    )
    try:
        host, port = listener.getsockname()
        yield f"http://{host}:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        listener.close()


def write(base_url: str, token: str) -> int:
    """POST a run of a plugin nobody has (a write: throttled before it is looked up)."""
    request = urllib.request.Request(
        f"{base_url}/v1/plugins/nobody-has-it/runs",
        data=json.dumps({"params": {}}).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own on the shared Redis; its keys are deleted after."""
    prefix = f"portal-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_two_servers_share_one_write_throttle(make_user, tmp_path, redis_prefix):
    """With PORTAL_CACHE_URL, writes to two servers count against one limit: 3 per minute
    in all, so the fourth is refused (429) by whichever server gets it."""
    token = issue_token(user=make_user("operator", "plugins_app.run_plugin"))
    env = {
        **os.environ,
        "DATABASE_URL": database_url(connection.settings_dict),
        "SECRET_KEY": "shared-throttle-test-key-" + "x" * 40,
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
        "PORTAL_SCHEDULER": "off",
        "PORTAL_API_WRITE_RATE": "3/minute",
        "PORTAL_CACHE_URL": REDIS_URL,
        "PORTAL_CACHE_KEY_PREFIX": redis_prefix,
    }
    with ExitStack() as servers:
        first = servers.enter_context(gunicorn(env))
        second = servers.enter_context(gunicorn(env))

        counted = [write(first, token), write(second, token), write(first, token)]
        refused = [write(second, token), write(first, token)]

    assert counted == [404, 404, 404]
    assert refused == [429, 429]
