"""Health reads when the database is down, locked or failing: the node's snapshot, never a 500.

These use real outages (the SQLite file replaced by garbage, or PostgreSQL unreachable) and real
locks held by another connection; only `TestInjectedFailure` injects an exception. The suite
refreshes the snapshot at each health read (PORTAL_HEALTH_REFRESH_ON_READ); `TestNoDatabase`
and `TestNodeRefresher` check the production mode, where health never touches the database.
The hung-server and many-process claims are in tests/integration/test_real_outage.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from plugins_app import selectors, services
from plugins_app.api import views
from plugins_app.health_refresher import NodeRefresher, refresh_once
from plugins_app.health_snapshot import SnapshotReader, reader

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def probe_every_request(settings):
    """A short read deadline, so outages and locks are seen quickly."""
    settings.PORTAL_HEALTH_DB_TIMEOUT_S = 0.5


@pytest.fixture
def fleet(make_plugin, finish_run):
    make_plugin("ok")
    make_plugin("flaky")
    finish_run("flaky", status="failed")
    services.plugin_mark_unavailable(name="gpu", reason="No CUDA GPU found on this host", actor="t")


def health_errors(caplog) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "plugins_app.health" and r.levelno >= logging.ERROR
    ]


def stale(record: dict) -> dict:
    """The record as served from a snapshot whose refresh failed (stale_since is then set)."""
    return {**record, "stale": True, "stale_since": record["stale_since"]}


@pytest.mark.usefixtures("probe_every_request")
class TestDatabaseOutage:
    def test_list__answers_last_snapshot_marked_stale(self, api_client, fleet, database_outage):
        """Database down: 200 with the last snapshot, every record stale, since when it said."""
        before = api_client.get("/v1/plugins").json()
        with database_outage():
            response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        assert response["X-Health-Stale"] == "true"
        assert response["X-Health-Checked-At"] == before[0]["checked_at"]
        during = response.json()
        assert during[0]["stale_since"] is not None
        assert during == [{**record, **STALE_OF(during)} for record in before]

    def test_health__answers_last_record_marked_stale(self, api_client, fleet, database_outage):
        """Database down: a plugin's health is its last record, stale, with when it was read."""
        before = api_client.get("/v1/plugins/flaky/health").json()
        with database_outage():
            response = api_client.get("/v1/plugins/flaky/health")
        assert response.status_code == 200
        assert response["X-Health-Stale"] == "true"
        assert response.json() == {**before, **STALE_OF([response.json()])}
        assert response.json()["state"] == "FAILED"

    def test_health__unknown_plugin_is_still_404(self, api_client, fleet, database_outage):
        """An unknown name stays a 404 during an outage: the snapshot holds every plugin."""
        api_client.get("/v1/plugins")
        with database_outage():
            response = api_client.get("/v1/plugins/ghost/health")
        assert response.status_code == 404
        assert response.json() == {"detail": "Plugin 'ghost' not found"}

    def test_list__filters_apply_to_the_snapshot(self, api_client, fleet, database_outage):
        """`?state=` during an outage filters the snapshot by each plugin's last known state."""
        api_client.get("/v1/plugins")
        with database_outage():
            response = api_client.get("/v1/plugins?state=FAILED")
        assert response.status_code == 200
        assert [(r["name"], r["stale"]) for r in response.json()] == [("flaky", True)]

    def test_no_snapshot__503_with_a_clear_body(self, api_client, fleet, database_outage):
        """Down before the node ever read the database: 503 saying health is unknown."""
        with database_outage():
            listed = api_client.get("/v1/plugins")
            single = api_client.get("/v1/plugins/ok/health")
        for response in (listed, single):
            assert response.status_code == 503
            assert response["X-Health-Stale"] == "true"
            assert response["Retry-After"] == "1"
            body = response.json()
            assert (body["stale"], body["checked_at"]) == (True, None)
            assert "no health snapshot yet" in body["detail"]

    def test_recovery__fresh_again_when_the_database_is_back(
        self, api_client, fleet, database_outage, caplog
    ):
        """After the outage the next read is fresh, and the end is logged with its duration."""
        api_client.get("/v1/plugins")
        with database_outage():
            assert api_client.get("/v1/plugins").json()[0]["stale"] is True
        response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        assert "X-Health-Stale" not in response
        assert all(r["stale"] is False and r["stale_since"] is None for r in response.json())
        (ended,) = [r for r in caplog.records if "answers again after" in r.getMessage()]
        assert ended.levelno == logging.WARNING

    def test_logging__one_line_per_outage_start_and_end(
        self, api_client, fleet, database_outage, caplog
    ):
        """Ten reads in one outage log its start once and its end once; a second outage again."""
        api_client.get("/v1/plugins")
        with database_outage():
            for _ in range(5):
                assert api_client.get("/v1/plugins").status_code == 200
                assert api_client.get("/v1/plugins/ok/health").status_code == 200
        api_client.get("/v1/plugins")  # recovered
        errors = health_errors(caplog)
        assert len(errors) == 1
        assert "did not answer" in errors[0].getMessage()
        with database_outage():
            api_client.get("/v1/plugins")
        assert len(health_errors(caplog)) == 2

    def test_logging__no_request_error_line_per_503(
        self, api_client, fleet, database_outage, caplog
    ):
        """A 503 from a run endpoint during an outage writes no django.request ERROR line."""
        api_client.get("/v1/plugins")
        with database_outage():
            api_client.get("/v1/plugins")  # the refresher sees the outage
            responses = [api_client.get("/v1/plugins/ok/runs") for _ in range(5)]
        assert {response.status_code for response in responses} == {503}
        noisy = [
            r
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("django")
        ]
        assert noisy == []
        assert not [r for r in caplog.records if r.name == "plugins_app.api" and r.levelno >= 30]

    def test_metrics__database_down_is_reported_not_a_500(self, api_client, fleet, database_outage):
        """/metrics during an outage answers 200 with portal_database_up 0."""
        with database_outage():
            response = api_client.get("/metrics")
        assert response.status_code == 200
        assert "portal_database_up 0.0" in response.content.decode()


def STALE_OF(served: list[dict]) -> dict:
    """The stale marks of a stale answer (stale_since is when the outage was first seen)."""
    return {"stale": True, "stale_since": served[0]["stale_since"]}


class TestDatabaseLocked:
    def test_locked__answers_from_snapshot_without_hanging(
        self, api_client, fleet, database_lock, settings
    ):
        """A lock held elsewhere: the refresh gives up at the deadline and the snapshot answers."""
        settings.PORTAL_HEALTH_DB_TIMEOUT_S = 0.3
        before = api_client.get("/v1/plugins").json()
        with database_lock():
            started = time.monotonic()
            response = api_client.get("/v1/plugins")
            waited = time.monotonic() - started
        assert response.status_code == 200
        assert response.json() == [{**r, **STALE_OF(response.json())} for r in before]
        assert waited < 10  # not the 30 s busy timeout: the refresh has its own deadline


@pytest.mark.usefixtures("probe_every_request")
class TestInjectedFailure:
    def test_list__broken_read_is_a_stale_200(self, api_client, fleet, monkeypatch, caplog):
        """A bug while reading the list is logged with its traceback; the snapshot answers."""
        before = api_client.get("/v1/plugins").json()

        def broken(**filters):
            raise RuntimeError("injected: the list selector broke")

        monkeypatch.setattr(selectors, "health_records", broken)
        response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        assert response.json() == [{**r, **STALE_OF(response.json())} for r in before]
        (error,) = health_errors(caplog)
        assert "injected: the list selector broke" in error.getMessage()
        assert error.exc_info[0] is RuntimeError
        assert "Traceback" not in response.content.decode()

    def test_health__exception_before_the_view_body_is_a_200(self, api_client, fleet, monkeypatch):
        """An exception in DRF's request setup (content negotiation here) still answers 200."""
        api_client.get("/v1/plugins")

        def broken(self, request, force=False):
            raise KeyError("injected: negotiation broke")

        monkeypatch.setattr(views.PluginListApi, "perform_content_negotiation", broken)
        response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        assert [r["name"] for r in json.loads(response.content)] == ["flaky", "gpu", "ok"]

    def test_health__broken_read_without_snapshot_is_503_not_500(
        self, api_client, fleet, monkeypatch
    ):
        """Nothing read yet and the read breaks: 503 with a JSON body, never a 500."""

        def broken(**filters):
            raise RuntimeError("injected")

        monkeypatch.setattr(selectors, "health_records", broken)
        response = api_client.get("/v1/plugins")
        assert response.status_code == 503
        assert response.json()["stale"] is True


class TestOutageWithReadsRequiringAuth:
    def test_credentials_unverifiable__503_not_stale_data(
        self, operator_client, fleet, database_outage, settings
    ):
        """With authenticated reads, a token cannot be checked while down: 503, no health shown."""
        settings.PORTAL_API_READS_REQUIRE_AUTH = True
        assert operator_client.get("/v1/plugins").status_code == 200  # a snapshot exists
        with database_outage():
            response = operator_client.get("/v1/plugins")
        assert response.status_code == 503
        assert "Cannot check your credentials" in response.json()["detail"]
        assert "records" not in response.json() and "name" not in response.content.decode()


@pytest.fixture
def production_mode(settings, monkeypatch):
    """Health reads do not refresh; the test refreshes by hand (no thread left running after)."""
    from plugins_app.health_refresher import refresher

    settings.PORTAL_HEALTH_REFRESH_ON_READ = False
    monkeypatch.setattr(refresher, "ensure_started", lambda: None)


@pytest.mark.usefixtures("production_mode")
class TestNoDatabase:
    """The production mode: health answers from the node's file and never queries the database."""

    def test_first_read__a_new_node_reads_once_instead_of_503(self, api_client, fleet):
        """A node whose refresher has not read yet reads the database once in the request: 200."""
        from plugins_app import health_refresher

        health_refresher._first_read_tried.clear()
        listed = api_client.get("/v1/plugins")
        assert listed.status_code == 200, listed.content
        assert "flaky" in {record["name"] for record in listed.json()}

    def test_health__no_query_at_all(self, api_client, fleet, settings, django_assert_num_queries):
        """With the snapshot published, the list and a record cost zero queries."""
        refresh_once()
        with django_assert_num_queries(0):
            listed = api_client.get("/v1/plugins")
            single = api_client.get("/v1/plugins/flaky/health")
            missing = api_client.get("/v1/plugins/ghost/health")
        assert (listed.status_code, single.status_code, missing.status_code) == (200, 200, 404)
        assert single.json()["state"] == "FAILED"

    def test_stale__after_stale_after_s_and_since_when(self, api_client, fleet, settings):
        """A snapshot older than PORTAL_HEALTH_STALE_AFTER_S is stale since it aged out."""
        refresh_once()
        settings.PORTAL_HEALTH_STALE_AFTER_S = 5
        path = settings.PORTAL_HEALTH_SNAPSHOT_FILE
        document = json.loads(path.read_text())
        document["read_at"] -= 60
        path.write_text(json.dumps(document))
        record = api_client.get("/v1/plugins/ok/health").json()
        assert record["stale"] is True
        assert record["checked_at"] < record["stale_since"]
        read_at = document["read_at"]
        served_since = time.mktime(time.strptime(record["stale_since"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert abs(served_since - time.mktime(time.gmtime(read_at + 5))) <= 1

    def test_reader__rereads_only_a_replaced_file(self, fleet, settings, monkeypatch):
        """A process re-parses the snapshot only when the refresher replaced the file."""
        from plugins_app import health_snapshot

        parsed = []
        original = health_snapshot._parse
        monkeypatch.setattr(
            health_snapshot, "_parse", lambda path: parsed.append(path) or original(path)
        )
        own = SnapshotReader()
        refresh_once()
        first = own.current()
        assert own.current() is first and len(parsed) == 1
        services.plugin_mark_unavailable(name="ok", reason="No GPU found on this host", actor="t")
        refresh_once()
        assert own.current().by_name["ok"]["state"] == "UNAVAILABLE"
        assert len(parsed) == 2


class TestNodeRefresher:
    """The background refresher: one per node, by lock, and the next one takes over."""

    def test_one_refreshes__the_next_takes_over_when_it_stops(self, fleet, settings):
        """Two refreshers: one holds the lock and publishes; stopped, the other takes over."""
        settings.PORTAL_HEALTH_REFRESH_S = 0.05
        first, second = NodeRefresher(), NodeRefresher()
        first.ensure_started()
        assert first.refreshing.wait(10)
        second.ensure_started()
        try:
            assert first.published.wait(10)
            assert not second.refreshing.is_set()
            services.plugin_mark_unavailable(
                name="ok", reason="No GPU found on this host", actor="t"
            )
            first.published.clear()
            assert first.published.wait(10)
            assert first.published.wait(10)
            assert reader.current().by_name["ok"]["state"] == "UNAVAILABLE"
            first.stop(wait_s=10)
            assert second.refreshing.wait(10)
            assert second.published.wait(10)
        finally:
            first.stop(wait_s=10)
            second.stop(wait_s=10)
        assert not {first._thread, second._thread} & set(threading.enumerate())
