"""GET /v1/plugins/{name}/health: one record or a 404 that names the plugin."""

from __future__ import annotations

import pytest

from plugins_app import selectors, services

pytestmark = pytest.mark.django_db


class TestPluginHealth:
    def test_health__one_record_with_every_key(self, api_client, make_plugin):
        """A known plugin answers 200 with its record: every key, fresh."""
        make_plugin("ok", version="2.0")
        response = api_client.get("/v1/plugins/ok/health")
        assert response.status_code == 200
        record = response.json()
        assert set(record) == set(selectors.HEALTH_FIELDS)
        assert (record["name"], record["state"], record["version"]) == ("ok", "INITIALIZED", "2.0")
        assert record["stale"] is False
        assert record["uptime_seconds"] >= 0

    def test_health__unavailable_plugin_is_200_with_its_reason(self, api_client):
        """UNAVAILABLE is a health answer, not an error: 200 with the actionable reason."""
        reason = "Missing Python module 'torch' required by plugin 'yolo' (pip install torch)"
        services.plugin_mark_unavailable(name="yolo", reason=reason, actor="t")
        response = api_client.get("/v1/plugins/yolo/health")
        assert response.status_code == 200
        assert (response.json()["state"], response.json()["reason"]) == ("UNAVAILABLE", reason)

    def test_health__unknown_plugin_is_404(self, api_client):
        """An unknown plugin is a 404 that names it."""
        response = api_client.get("/v1/plugins/ghost/health")
        assert response.status_code == 404
        assert response.json() == {"detail": "Plugin 'ghost' not found"}

    def test_health__same_with_trailing_slash(self, api_client, make_plugin):
        """/health and /health/ answer the same record, without a redirect."""
        make_plugin("ok")
        response = api_client.get("/v1/plugins/ok/health/")
        assert response.status_code == 200
        assert response.json()["name"] == "ok"

    def test_health__names_with_odd_characters(self, api_client, make_plugin):
        """Names with dots, spaces or unicode are looked up as they are."""
        make_plugin("ocr.v2 béta")
        response = api_client.get("/v1/plugins/ocr.v2%20b%C3%A9ta/health")
        assert response.status_code == 200
        assert response.json()["name"] == "ocr.v2 béta"

    def test_health__reflects_state_changes(self, api_client, make_plugin, finish_run):
        """Each read is fresh: a failed run shows at once."""
        make_plugin("ok")
        assert api_client.get("/v1/plugins/ok/health").json()["state"] == "INITIALIZED"
        finish_run("ok", status="crashed")
        record = api_client.get("/v1/plugins/ok/health").json()
        assert (record["state"], record["error_count"]) == ("FAILED", 1)

    def test_health__same_record_as_from_the_model(self, api_client, make_plugin, finish_run):
        """The precompiled single-record read gives exactly what the model-based builder gives."""
        plugin = make_plugin("ok", description="Reads text", version="1.2")
        finish_run("ok", duration_ms=12.5)
        finish_run("ok", status="failed", duration_ms=7.25)
        plugin.refresh_from_db()
        volatile = {"checked_at", "uptime_seconds"}
        from_model = selectors.health_record(plugin)
        served = api_client.get("/v1/plugins/ok/health").json()
        assert {k: v for k, v in served.items() if k not in volatile} == {
            k: v for k, v in from_model.items() if k not in volatile
        }
        assert served["last_error_at"] is not None and served["enabled"] is True
