"""GET /v1/plugins: every plugin's health record, filters, one shape, O(1) queries."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from plugins_app import selectors, services

pytestmark = pytest.mark.django_db

VOLATILE = {"checked_at", "uptime_seconds"}


def stable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


@pytest.fixture
def fleet(make_plugin, finish_run):
    """One plugin in each interesting situation."""
    make_plugin("ok")
    make_plugin("loaded", initialized=False)
    make_plugin("flaky")
    finish_run("flaky", status="failed")
    services.plugin_mark_unavailable(name="gpu", reason="No CUDA GPU found here", actor="t")
    make_plugin("off")
    services.plugin_disable(name="off", note="maintenance", actor="user:ann")


class TestPluginList:
    def test_list__every_plugin_with_every_key(self, api_client, make_plugin):
        """The list has every plugin, FAILED and UNAVAILABLE too, each with every key."""
        make_plugin("ok")
        services.plugin_mark_unavailable(name="gpu", reason="No CUDA GPU found here", actor="t")
        response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        records = response.json()
        assert [(r["name"], r["state"]) for r in records] == [
            ("gpu", "UNAVAILABLE"),
            ("ok", "INITIALIZED"),
        ]
        assert all(set(r) == set(selectors.HEALTH_FIELDS) for r in records)

    def test_list__same_with_trailing_slash(self, api_client, make_plugin):
        """One shape: /v1/plugins and /v1/plugins/ answer the same, without a redirect."""
        make_plugin("ok")
        without, with_slash = api_client.get("/v1/plugins"), api_client.get("/v1/plugins/")
        assert (without.status_code, with_slash.status_code) == (200, 200)
        assert stable(with_slash.json()) == stable(without.json())

    def test_list__empty_registry_is_an_empty_list(self, api_client):
        """No plugins registered: 200 with [] (fresh, not stale)."""
        response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        assert response.json() == []
        assert "X-Health-Stale" not in response

    def test_list__record_values(self, api_client, make_plugin, finish_run):
        """A record carries the registry's numbers, null where unknown, fresh and unstale."""
        make_plugin("ok", description="Reads text", version="1.2")
        finish_run("ok", duration_ms=20.0)
        finish_run("ok", status="failed", duration_ms=40.0)
        (record,) = api_client.get("/v1/plugins").json()
        assert record["state"] == "FAILED"
        assert record["reason"] == "Run of plugin 'ok' failed in the test on purpose"
        assert (record["success_count"], record["error_count"]) == (1, 1)
        assert record["consecutive_failures"] == 1
        assert (record["last_duration_ms"], record["avg_duration_ms"]) == (40.0, 30.0)
        assert (record["description"], record["version"]) == ("Reads text", "1.2")
        assert record["uptime_seconds"] is None  # FAILED is not available
        assert record["last_run_at"] and record["last_error_at"] and record["last_success_at"]
        assert record["stale"] is False and record["checked_at"].endswith("Z")


class TestPluginListFilters:
    @pytest.mark.parametrize(
        ("query", "names"),
        [
            ("state=FAILED", ["flaky"]),
            ("state=UNAVAILABLE", ["gpu"]),
            ("state=LOADED", ["loaded"]),
            ("enabled=false", ["off"]),
            ("enabled=true", ["flaky", "gpu", "loaded", "ok"]),
            ("state=INITIALIZED&enabled=true", ["ok"]),
            ("state=INITIALIZED&enabled=false", ["off"]),
            ("state=&enabled=", ["flaky", "gpu", "loaded", "off", "ok"]),
        ],
    )
    def test_filter__selects_matching_plugins(self, api_client, fleet, query, names):
        """`?state=` and `?enabled=` narrow the list; empty values mean no filter."""
        response = api_client.get(f"/v1/plugins?{query}")
        assert response.status_code == 200
        assert [r["name"] for r in response.json()] == names

    @pytest.mark.parametrize(
        ("query", "named"),
        [("state=BROKEN", "state"), ("state=failed", "state"), ("enabled=maybe", "enabled")],
    )
    def test_filter__bad_value_is_400_naming_it(self, api_client, query, named):
        """A filter value that is not allowed is a 400 whose message names the parameter."""
        response = api_client.get(f"/v1/plugins?{query}")
        assert response.status_code == 400
        assert response.json()["detail"].startswith(f"Invalid query parameter: {named}: ")

    def test_filter__unknown_query_parameters_are_ignored(self, api_client, fleet):
        """Monitors add cache busters (`?_=123`): unknown query parameters change nothing."""
        response = api_client.get("/v1/plugins?_=12345")
        assert response.status_code == 200
        assert len(response.json()) == 5


class TestPluginListQueries:
    def _queries_for_list(self, api_client, make_plugin, add: int, total: int) -> int:
        for _ in range(add):
            make_plugin()
        with CaptureQueriesContext(connection) as queries:
            response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        assert len(response.json()) == total
        return len(queries)

    def test_list__query_count_does_not_grow_with_plugins(
        self, api_client, make_plugin, django_assert_max_num_queries
    ):
        """3 plugins and 30 plugins cost the same number of SQL queries (a small constant)."""
        few = self._queries_for_list(api_client, make_plugin, add=3, total=3)
        many = self._queries_for_list(api_client, make_plugin, add=27, total=30)
        assert few == many
        with django_assert_max_num_queries(4):
            api_client.get("/v1/plugins")
