"""Who may call the API: public reads (or not, by setting), writes with run_plugin, throttled."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from plugins_app import pipeline
from plugins_app.models import PluginRun
from plugins_app.tokens import issue_token

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    """Throttle counts live in the cache; each test starts from zero."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def echo(plugin_dir, settings):
    settings.PORTAL_PLUGIN_DIRS = [str(plugin_dir.path)]
    settings.PORTAL_RUN_EXECUTOR = "inline"
    plugin_dir.add("echo", "def run(**params):\n    return params\n")
    pipeline.reload_plugin(name="echo", actor="test")
    yield "echo"
    pipeline.discard_warm_hosts()


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(user=user)}")
    return client


class TestWriteAuthentication:
    def test_anonymous_write__401_asking_for_a_token(self, api_client, echo):
        """No credentials: 401 with WWW-Authenticate, and no run is created."""
        response = api_client.post("/v1/plugins/echo/runs", {}, format="json")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
        assert "credentials were not provided" in response.json()["detail"]
        assert PluginRun.objects.count() == 0

    def test_bad_token__401(self, echo):
        """A token that does not exist: 401."""
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
        response = client.post("/v1/plugins/echo/reload")
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid token."}

    def test_user_without_permission__403_naming_it(self, make_user, echo):
        """Authenticated but without run_plugin: 403 that names the permission."""
        client = token_client(make_user("viewer"))
        response = client.post("/v1/plugins/echo/runs", {}, format="json")
        assert response.status_code == 403
        assert "plugins_app.run_plugin" in response.json()["detail"]
        assert PluginRun.objects.count() == 0

    def test_token_with_permission__runs(self, operator_client, echo):
        """A token whose user has run_plugin may run and reload."""
        assert operator_client.post("/v1/plugins/echo/runs", {}, format="json").status_code == 202
        assert operator_client.post("/v1/plugins/echo/reload").status_code == 200

    def test_permission_through_a_group__runs(self, make_user, echo):
        """run_plugin granted through a group counts too."""
        from django.contrib.auth.models import Group, Permission

        group = Group.objects.create(name="operators")
        group.permissions.add(Permission.objects.get(codename="run_plugin"))
        user = make_user("grouped")
        user.groups.add(group)
        response = token_client(user).post("/v1/plugins/echo/reload")
        assert response.status_code == 200


class TestSessionWrites:
    def test_session_without_csrf__403(self, api_client, make_user, echo):
        """A logged-in browser session must send the CSRF token: without it, 403."""
        api_client.force_login(make_user("operator", "plugins_app.run_plugin"))
        response = api_client.post("/v1/plugins/echo/runs", {}, format="json")
        assert response.status_code == 403
        assert "CSRF" in response.json()["detail"]

    def test_session_with_csrf__runs(self, make_user, echo):
        """With the CSRF cookie and header, a session may run a plugin."""
        client = APIClient(enforce_csrf_checks=True)
        user = make_user("operator", "plugins_app.run_plugin")
        client.force_login(user)
        client.get("/admin/login/")  # sets the csrftoken cookie
        token = client.cookies["csrftoken"].value
        response = client.post("/v1/plugins/echo/runs", {}, format="json", HTTP_X_CSRFTOKEN=token)
        assert response.status_code == 202
        assert response.json()["actor"] == "api:operator"


class TestThrottling:
    def test_writes_over_the_rate__429_with_retry_after(self, operator_client, echo, settings):
        """Past PORTAL_API_WRITE_RATE a write is a 429 saying when to retry."""
        settings.PORTAL_API_WRITE_RATE = "2/minute"
        statuses = [operator_client.post("/v1/plugins/echo/reload").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        response = operator_client.post("/v1/plugins/echo/reload")
        assert int(response["Retry-After"]) > 0
        assert "throttled" in response.json()["detail"]

    def test_shared_cache_unreachable__writes_go_through_and_it_is_logged(
        self, operator_client, echo, settings, caplog
    ):
        """A Redis that refuses connections costs the throttle, not the write: answered, logged."""
        settings.PORTAL_API_WRITE_RATE = "1/minute"
        unreachable = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
        with override_settings(CACHES={"default": unreachable}):
            statuses = [operator_client.post("/v1/plugins/echo/reload").status_code for _ in "ab"]
        assert statuses == [200, 200]
        assert "write throttle" in caplog.text and "PORTAL_CACHE_URL" in caplog.text

    def test_reads_are_not_throttled(self, api_client, echo, settings):
        """Health reads never count against the write rate."""
        settings.PORTAL_API_WRITE_RATE = "1/minute"
        assert {api_client.get("/v1/plugins").status_code for _ in range(5)} == {200}


class TestReadAuthentication:
    def test_reads_public_by_default(self, api_client, echo):
        """Without the setting, anyone may read health, runs and metrics."""
        for path in ("/v1/plugins", "/v1/plugins/echo/health", "/v1/plugins/echo/runs"):
            assert api_client.get(path).status_code == 200, path

    def test_reads_require_auth_when_set(self, api_client, make_user, echo, settings):
        """PORTAL_API_READS_REQUIRE_AUTH=1: anonymous reads are 401, any user may read."""
        settings.PORTAL_API_READS_REQUIRE_AUTH = True
        for path in ("/v1/plugins", "/v1/plugins/echo/health", "/v1/plugins/echo/runs"):
            assert api_client.get(path).status_code == 401, path
        reader = token_client(make_user("reader"))
        for path in ("/v1/plugins", "/v1/plugins/echo/health", "/v1/plugins/echo/runs"):
            assert reader.get(path).status_code == 200, path

    def test_reads_require_auth__wrong_method_still_405(self, make_user, echo, settings):
        """A method no endpoint serves stays a 405 for an authenticated reader."""
        settings.PORTAL_API_READS_REQUIRE_AUTH = True
        reader = token_client(make_user("reader"))
        assert reader.delete("/v1/plugins").status_code == 405
