"""Health reads when the database is down, locked or failing: the last snapshot, never a 500.

These use real outages (the SQLite file replaced by garbage, or PostgreSQL unreachable) and real
locks held by another connection; only `TestInjectedFailure` injects an exception.
"""

from __future__ import annotations

import logging
import time

import pytest

from plugins_app import selectors, services
from plugins_app.api import views
from plugins_app.snapshot import HealthSnapshot

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def probe_every_request(settings):
    """Each request during an outage tries the database, so "logged once" is about the log."""
    settings.PORTAL_HEALTH_RETRY_S = 0
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


@pytest.mark.usefixtures("probe_every_request")
class TestDatabaseOutage:
    def test_list__answers_last_snapshot_marked_stale(self, api_client, fleet, database_outage):
        """Database down: 200 with the last list served, every record stale with its checked_at."""
        before = api_client.get("/v1/plugins").json()
        with database_outage():
            response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        assert response["X-Health-Stale"] == "true"
        assert response["X-Health-Checked-At"] == before[0]["checked_at"]
        assert response.json() == [{**record, "stale": True} for record in before]

    def test_health__answers_last_record_marked_stale(self, api_client, fleet, database_outage):
        """Database down: a plugin's health is its last record, stale, with when it was read."""
        before = api_client.get("/v1/plugins/flaky/health").json()
        with database_outage():
            response = api_client.get("/v1/plugins/flaky/health")
        assert response.status_code == 200
        assert response["X-Health-Stale"] == "true"
        assert response.json() == {**before, "stale": True}
        assert response.json()["state"] == "FAILED"

    def test_health__answers_from_the_list_snapshot(self, api_client, fleet, database_outage):
        """A plugin only ever seen in the list is still answered from the list's snapshot."""
        listed = {r["name"]: r for r in api_client.get("/v1/plugins").json()}
        with database_outage():
            response = api_client.get("/v1/plugins/gpu/health")
        assert response.status_code == 200
        assert response.json() == {**listed["gpu"], "stale": True}

    def test_health__unknown_plugin_is_still_404(self, api_client, fleet, database_outage):
        """With the whole registry in the snapshot, an unknown name stays a 404 during an outage."""
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

    def test_snapshot__keeps_the_freshest_record(
        self, api_client, fleet, finish_run, database_outage
    ):
        """A single read after the list refreshes that plugin's record in the snapshot."""
        api_client.get("/v1/plugins")
        finish_run("ok", status="failed")
        fresh = api_client.get("/v1/plugins/ok/health").json()
        with database_outage():
            records = {r["name"]: r for r in api_client.get("/v1/plugins").json()}
        assert records["ok"] == {**fresh, "stale": True}
        assert records["ok"]["state"] == "FAILED"

    def test_no_snapshot__503_with_a_clear_body(self, api_client, fleet, database_outage):
        """Down before anything was served: 503 saying health is unknown, not an empty list."""
        with database_outage():
            listed = api_client.get("/v1/plugins")
            single = api_client.get("/v1/plugins/ok/health")
        for response in (listed, single):
            assert response.status_code == 503
            assert response["X-Health-Stale"] == "true"
            assert response["Retry-After"] == "5"
            body = response.json()
            assert (body["stale"], body["checked_at"]) == (True, None)
            assert "database cannot be read" in body["detail"]

    def test_no_snapshot__only_a_filtered_list_was_served(self, api_client, fleet, database_outage):
        """A filter served before can be answered; a filter never served cannot (503)."""
        api_client.get("/v1/plugins?state=FAILED")
        with database_outage():
            served = api_client.get("/v1/plugins?state=FAILED")
            never = api_client.get("/v1/plugins")
        assert [r["name"] for r in served.json()] == ["flaky"]
        assert never.status_code == 503

    def test_recovery__fresh_again_when_the_database_is_back(
        self, api_client, fleet, database_outage, caplog
    ):
        """After the outage the next read is fresh, and the recovery is logged."""
        api_client.get("/v1/plugins")
        with database_outage():
            assert api_client.get("/v1/plugins").json()[0]["stale"] is True
        response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        assert "X-Health-Stale" not in response
        assert all(r["stale"] is False for r in response.json())
        assert any("recovered" in r.getMessage() for r in caplog.records)

    def test_logging__once_per_outage_not_per_request(
        self, api_client, fleet, database_outage, caplog
    ):
        """Ten reads in one outage log the database error once; a second outage logs again."""
        api_client.get("/v1/plugins")
        with database_outage():
            for _ in range(5):
                assert api_client.get("/v1/plugins").status_code == 200
                assert api_client.get("/v1/plugins/ok/health").status_code == 200
        errors = health_errors(caplog)
        assert len(errors) == 1
        assert (
            "OperationalError" in errors[0].getMessage()
            or "DatabaseError" in errors[0].getMessage()
        )
        assert errors[0].exc_info is not None
        api_client.get("/v1/plugins")  # recovered
        with database_outage():
            api_client.get("/v1/plugins")
        assert len(health_errors(caplog)) == 2

    def test_metrics__database_down_is_reported_not_a_500(self, api_client, fleet, database_outage):
        """/metrics during an outage answers 200 with portal_database_up 0."""
        with database_outage():
            response = api_client.get("/metrics")
        assert response.status_code == 200
        assert "portal_database_up 0.0" in response.content.decode()


class TestDatabaseLocked:
    def test_locked__answers_from_snapshot_without_hanging(
        self, api_client, fleet, database_lock, settings
    ):
        """A lock held elsewhere: the read gives up at the deadline and the snapshot answers."""
        settings.PORTAL_HEALTH_DB_TIMEOUT_S, settings.PORTAL_HEALTH_RETRY_S = 0.3, 0
        before = api_client.get("/v1/plugins").json()
        with database_lock():
            started = time.monotonic()
            response = api_client.get("/v1/plugins")
            waited = time.monotonic() - started
        assert response.status_code == 200
        assert response.json() == [{**r, "stale": True} for r in before]
        assert waited < 10  # not the 30 s busy timeout: the health read has its own deadline


class TestProbeBackOff:
    def test_outage__other_requests_do_not_wait_on_the_database(
        self, api_client, fleet, database_outage, settings
    ):
        """While failing, one request per retry interval tries the database; the rest don't."""
        settings.PORTAL_HEALTH_RETRY_S, settings.PORTAL_HEALTH_DB_TIMEOUT_S = 60, 0.5
        api_client.get("/v1/plugins")
        with database_outage():
            assert api_client.get("/v1/plugins")["X-Health-Stale"] == "true"
        # The database is back, but the retry interval has not passed: still the snapshot.
        assert api_client.get("/v1/plugins")["X-Health-Stale"] == "true"


@pytest.mark.usefixtures("probe_every_request")
class TestInjectedFailure:
    def test_list__exception_in_the_view_is_a_stale_200(
        self, api_client, fleet, monkeypatch, caplog
    ):
        """A bug while building the list is logged with its traceback; the snapshot answers."""
        before = api_client.get("/v1/plugins").json()

        def broken(**filters):
            raise RuntimeError("injected: the list selector broke")

        monkeypatch.setattr(selectors, "health_records", broken)
        response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        assert response.json() == [{**r, "stale": True} for r in before]
        (error,) = health_errors(caplog)
        assert "injected: the list selector broke" in error.getMessage()
        assert error.exc_info[0] is RuntimeError
        assert "Traceback" not in response.content.decode()

    def test_health__exception_in_the_view_is_a_stale_200(self, api_client, fleet, monkeypatch):
        """A bug while building one record answers that plugin's last record, stale."""
        before = api_client.get("/v1/plugins/ok/health").json()

        def broken(**kwargs):
            raise ValueError("injected: the record builder broke")

        monkeypatch.setattr(selectors, "health_record_by_name", broken)
        response = api_client.get("/v1/plugins/ok/health")
        assert response.status_code == 200
        assert response.json() == {**before, "stale": True}

    def test_health__exception_before_the_view_body_is_a_stale_200(
        self, api_client, fleet, monkeypatch
    ):
        """An exception in DRF's request setup (content negotiation here) still answers 200."""
        api_client.get("/v1/plugins")

        def broken(self, request, force=False):
            raise KeyError("injected: negotiation broke")

        monkeypatch.setattr(views.PluginListApi, "perform_content_negotiation", broken)
        response = api_client.get("/v1/plugins")
        assert response.status_code == 200
        assert response["X-Health-Stale"] == "true"

    def test_health__exception_without_snapshot_is_503_not_500(
        self, api_client, fleet, monkeypatch
    ):
        """Nothing served yet and the read breaks: 503 with a JSON body, never a 500."""

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
        settings.PORTAL_HEALTH_RETRY_S = 0
        assert operator_client.get("/v1/plugins").status_code == 200  # a snapshot exists
        with database_outage():
            response = operator_client.get("/v1/plugins")
        assert response.status_code == 503
        assert "Cannot check your credentials" in response.json()["detail"]
        assert "records" not in response.json() and "name" not in response.content.decode()


def snapshot_record(name: str, checked_at: str, state: str = "LOADED") -> dict:
    return {"name": name, "state": state, "enabled": True, "checked_at": checked_at}


class TestSnapshotOrdering:
    """A slow read that finishes late never replaces a newer answer already served."""

    def test_older_list__keeps_the_newer_single_record(self):
        """A list read before a single-plugin read, remembered after it, keeps the newer one."""
        snapshot = HealthSnapshot()
        snapshot.remember_record(snapshot_record("ok", "2026-01-01T10:00:05Z", "FAILED"))
        snapshot.remember_list([snapshot_record("ok", "2026-01-01T10:00:00Z")])
        assert snapshot.stale_record("ok")["state"] == "FAILED"
        assert [r["state"] for r in snapshot.stale_list()] == ["FAILED"]

    def test_older_record__does_not_replace_a_newer_list(self):
        """A single read remembered after a newer list does not roll that plugin back."""
        snapshot = HealthSnapshot()
        snapshot.remember_list([snapshot_record("ok", "2026-01-01T10:00:05Z", "FAILED")])
        snapshot.remember_record(snapshot_record("ok", "2026-01-01T10:00:00Z"))
        assert snapshot.stale_record("ok")["state"] == "FAILED"

    def test_times_compare_as_times__not_as_text(self):
        """10:00:05Z is newer than 10:00:04.900000Z although it sorts before it as text."""
        snapshot = HealthSnapshot()
        snapshot.remember_record(snapshot_record("ok", "2026-01-01T10:00:05Z", "FAILED"))
        snapshot.remember_record(snapshot_record("ok", "2026-01-01T10:00:04.900000Z"))
        assert snapshot.stale_record("ok")["state"] == "FAILED"

    def test_older_full_list__keeps_a_plugin_read_after_it(self):
        """A plugin first read after the slow full list started is not dropped by that list."""
        snapshot = HealthSnapshot()
        snapshot.remember_record(snapshot_record("new", "2026-01-01T10:00:05Z"))
        snapshot.remember_list([snapshot_record("ok", "2026-01-01T10:00:00Z")])
        assert [r["name"] for r in snapshot.stale_list()] == ["new", "ok"]

    def test_newer_full_list__drops_plugins_gone_and_refreshes_the_rest(self):
        """A newer full list still replaces older records and drops plugins it lacks."""
        snapshot = HealthSnapshot()
        snapshot.remember_record(snapshot_record("gone", "2026-01-01T10:00:00Z"))
        snapshot.remember_record(snapshot_record("ok", "2026-01-01T10:00:00Z"))
        snapshot.remember_list([snapshot_record("ok", "2026-01-01T10:00:05Z", "FAILED")])
        assert [(r["name"], r["state"]) for r in snapshot.stale_list()] == [("ok", "FAILED")]
