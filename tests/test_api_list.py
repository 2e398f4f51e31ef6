"""The minimal health list and record (the health API issue completes the API)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from plugins_app import selectors, services

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> APIClient:
    return APIClient()


class TestPluginList:
    def test_list__every_plugin_with_every_key(self, client, make_plugin):
        """The list has every plugin, FAILED and UNAVAILABLE too, each with every key."""
        make_plugin("ok")
        services.plugin_mark_unavailable(name="gpu", reason="No CUDA GPU found here", actor="t")
        response = client.get("/v1/plugins")
        assert response.status_code == 200
        records = response.json()
        assert [(r["name"], r["state"]) for r in records] == [
            ("gpu", "UNAVAILABLE"),
            ("ok", "INITIALIZED"),
        ]
        assert all(set(r) == set(selectors.HEALTH_FIELDS) for r in records)

    def test_list__same_with_trailing_slash(self, client, make_plugin):
        """One shape: /v1/plugins and /v1/plugins/ answer the same."""
        make_plugin("ok")
        volatile = {"checked_at", "uptime_seconds"}

        def names_and_keys(path: str) -> list[dict]:
            return [
                {k: v for k, v in r.items() if k not in volatile} for r in client.get(path).json()
            ]

        assert names_and_keys("/v1/plugins/") == names_and_keys("/v1/plugins")

    def test_health__unknown_plugin_is_404(self, client):
        """An unknown plugin is a 404 that names it."""
        response = client.get("/v1/plugins/ghost/health")
        assert response.status_code == 404
        assert response.json() == {"detail": "Plugin 'ghost' not found"}
