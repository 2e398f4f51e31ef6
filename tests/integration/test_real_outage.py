"""Every outage claim against real processes: gunicorn (2 workers) on a private PostgreSQL.

One cluster and one gunicorn for the module (tools/private_postgres.py). Each test starts and
ends with the database up, so they pass in any order or on any xdist worker: up; hung (SIGSTOP,
with the workers' connections open under CONN_MAX_AGE=60) then resumed; stopped then started.
Never the machine's shared server.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dj_database_url
import pytest
from django.db.utils import ConnectionHandler

from tests.metrics_support import of, parse
from tools.private_postgres import (
    Gunicorn,
    PrivateCluster,
    get,
    manage,
    portal_env,
    seed_plugins,
    wait_until,
)

# One xdist worker takes the module, so its cluster and gunicorn start once per suite run.
pytestmark = [
    pytest.mark.postgres_cluster,
    pytest.mark.xdist_group("real_outage"),
    pytest.mark.timeout(300),
]

DB_DEADLINE_S = 2.0
HEALTH_BUDGET_S = 1.0  # a Kubernetes probe's default timeout
OUTAGE_STARTS = "Health refresh: the database did not answer"
OUTAGE_ENDS = "the database answers again after"


class Portal:
    def __init__(self, cluster: PrivateCluster, server: Gunicorn) -> None:
        self.cluster, self.server = cluster, server

    def get(self, path: str, timeout: float = 30.0):
        return get(self.server.base + path, timeout=timeout)


@pytest.fixture(scope="module")
def portal(tmp_path_factory) -> Iterator[Portal]:
    cluster = PrivateCluster()
    server = None
    try:
        cluster.start()
        cluster.create_database()
        var = tmp_path_factory.mktemp("portal-var")
        env = portal_env(
            cluster.url,
            var,
            PORTAL_DB_DEADLINE_S=str(DB_DEADLINE_S),
            PORTAL_HEALTH_DB_TIMEOUT_S="1",
            PORTAL_HEALTH_STALE_AFTER_S="3",
        )
        manage(env, "migrate", "--noinput")
        seed_plugins(env, ["ocr", "vision", "broken"], failed=["broken"])
        server = Gunicorn(env, var / "gunicorn.log", workers=2)
        portal = Portal(cluster, server)
        wait_until(
            lambda: portal.get("/v1/plugins", timeout=5)[0] == 200,
            timeout=60,
            what="the first health snapshot",
        )
        yield portal
    finally:
        if server is not None:
            server.stop()
        cluster.remove()


def many(portal: Portal, paths: list[str], rounds: int) -> list[tuple[int, dict, object, float]]:
    """Each path `rounds` times, four at a time (both workers, several threads)."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(portal.get, paths * rounds))


def open_connections(portal: Portal) -> None:
    """Requests that query the database, so every worker thread keeps a connection open."""
    for status, *_ in many(portal, ["/v1/plugins/ocr/runs"], 8):
        assert status == 200


class Outage:
    """The outage log lines written while the block runs, and the database up again after it."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        log = portal.server.log_text()
        self.starts, self.ends = log.count(OUTAGE_STARTS), log.count(OUTAGE_ENDS)

    def lines(self) -> tuple[int, int]:
        log = self.portal.server.log_text()
        return log.count(OUTAGE_STARTS) - self.starts, log.count(OUTAGE_ENDS) - self.ends

    def await_fresh(self) -> None:
        wait_until(
            lambda: self.portal.get("/v1/plugins/ocr/health")[2]["stale"] is False,
            timeout=30,
            what="fresh health once the database is back",
        )
        wait_until(lambda: self.portal.get("/readyz")[0] == 200, timeout=30, what="ready again")

    def await_end_logged(self) -> None:
        """Fresh again, and the outage's end line written (just after the fresh snapshot)."""
        self.await_fresh()
        wait_until(lambda: self.lines()[1] > 0, timeout=30, what="the outage's end logged")


def await_stale(portal: Portal) -> None:
    """The refresher's read is cut at its 1 s deadline: then every record says stale."""
    wait_until(
        lambda: portal.get("/v1/plugins/ocr/health")[2]["stale"] is True,
        timeout=10,
        what="health marked stale during the outage",
    )


def assert_health_answers_in_time(portal: Portal, rounds: int) -> None:
    health = many(portal, ["/v1/plugins", "/v1/plugins/ocr/health"], rounds)
    assert {status for status, *_ in health} == {200}
    assert max(took for *_, took in health) < HEALTH_BUDGET_S
    assert portal.get("/v1/plugins/ghost/health")[0] == 404
    record = portal.get("/v1/plugins/ocr/health")[2]
    assert record["stale"] and record["stale_since"] and record["state"] == "INITIALIZED"


def assert_database_named_and_series_kept(portal: Portal, before: dict) -> None:
    status, _, body, took = portal.get("/readyz")
    assert (status, body["failed"]) == (503, ["database"]) and took < 5
    during = parse(portal.get("/metrics")[2])
    assert during["portal_database_up"][()] == 0
    assert during["portal_plugin_state"] == before["portal_plugin_state"]
    assert during["portal_plugin_state"][of("broken", state="FAILED")] == 1


class TestRealOutage:
    def test_up__fresh_health_ready_and_metrics(self, portal):
        """Database up: fresh health, 404 for an unknown name, ready, portal_database_up 1."""
        status, headers, records, _ = portal.get("/v1/plugins")
        assert status == 200 and "X-Health-Stale" not in headers
        assert {r["name"]: r["state"] for r in records} == {
            "broken": "FAILED",
            "ocr": "INITIALIZED",
            "vision": "INITIALIZED",
        }
        assert portal.get("/v1/plugins/ghost/health")[0] == 404
        assert portal.get("/readyz")[0] == 200
        assert portal.get("/livez")[0] == 200
        samples = parse(portal.get("/metrics")[2])
        assert samples["portal_database_up"][()] == 1
        assert samples["portal_health_snapshot_age_seconds"][()] < 5

    def test_hung__health_in_time_requests_bounded_restarted_workers_stale_one_log_line(
        self, portal
    ):
        """SIGSTOP, connections open: health 200 in 1 s, runs cut, new workers 200 stale at once."""
        before = parse(portal.get("/metrics")[2])
        open_connections(portal)
        outage = Outage(portal)
        portal.cluster.pause()
        try:
            await_stale(portal)
            assert_health_answers_in_time(portal, rounds=15)
            runs = many(portal, ["/v1/plugins/ocr/runs"], 4)
            assert {status for status, *_ in runs} == {503}
            assert max(took for *_, took in runs) < DB_DEADLINE_S + 6  # a new connection: 5 s
            assert_database_named_and_series_kept(portal, before)

            old = set(portal.server.workers())
            for pid in old:
                os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: len(set(portal.server.workers()) - old) == 2,
                timeout=60,
                what="gunicorn restarted both workers",
            )
            # A worker accepts connections once it has booted (imported Django): wait for that.
            assert portal.get("/livez", timeout=120)[0] == 200
            status, headers, records, took = portal.get("/v1/plugins")
            assert status == 200 and headers["X-Health-Stale"] == "true"
            assert took < HEALTH_BUDGET_S
            assert all(record["stale"] for record in records)
        finally:
            portal.cluster.resume()
        outage.await_end_logged()
        assert outage.lines() == (1, 1), portal.server.log_text()
        assert "Service Unavailable" not in portal.server.log_text()  # no line per 503

    def test_stopped__health_in_time_requests_bounded_one_log_line(self, portal):
        """Database stopped: health 200 within 1 s, runs 503 fast, readyz 503, metrics kept."""
        before = parse(portal.get("/metrics")[2])
        outage = Outage(portal)
        portal.cluster.stop()
        try:
            await_stale(portal)
            assert_health_answers_in_time(portal, rounds=10)
            started = time.monotonic()
            assert portal.get("/v1/plugins/ocr/runs")[0] == 503
            assert time.monotonic() - started < DB_DEADLINE_S + 6
            assert_database_named_and_series_kept(portal, before)
        finally:
            portal.cluster.start()
        outage.await_end_logged()
        assert outage.lines() == (1, 1), portal.server.log_text()


class TestKeptConnection:
    # A check that hangs waits in libpq, where the signal method cannot interrupt it.
    @pytest.mark.timeout(60, method="thread")
    def test_hung__the_check_before_reuse_ends_at_the_deadline(
        self, portal, settings, django_db_blocker
    ):
        """A connection kept between tasks (a worker node's, CONN_MAX_AGE) is checked before
        reuse; on a hung server the check ends at PORTAL_DB_DEADLINE_S, so the task connects
        anew instead of waiting forever."""
        settings.PORTAL_DB_DEADLINE_S = 1.0
        kept_settings = {
            **dj_database_url.parse(portal.cluster.url),
            "ENGINE": "portal.db.postgresql",
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
        outage = Outage(portal)
        with django_db_blocker.unblock():  # the private cluster's database, not the test's
            kept = ConnectionHandler({"default": kept_settings})["default"]
            kept.ensure_connection()
            portal.cluster.pause()
            try:
                started = time.monotonic()
                usable = kept.is_usable()
                took = time.monotonic() - started
            finally:
                portal.cluster.resume()
                kept.close()
        assert not usable and took < 10, took
        # The portal's own outage, if its refresher saw one, ends in this test, not the next.
        if outage.lines()[0]:
            outage.await_end_logged()
        else:
            outage.await_fresh()
