"""Every outage claim against real processes: gunicorn (2 workers) on a private PostgreSQL.

One cluster and one gunicorn for the module (tools/private_postgres.py); the tests run in order
through one life of the database: up, hung (SIGSTOP, with the workers' connections open under
CONN_MAX_AGE=60), resumed, stopped, started again. Never the machine's shared server.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

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

# One worker runs the whole module in order: its tests share one cluster through its outages.
pytestmark = [
    pytest.mark.postgres_cluster,
    pytest.mark.xdist_group("postgres_cluster"),
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


class TestRealOutage:
    def test_1_up__fresh_health_ready_and_metrics(self, portal):
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

    def test_2_hung__health_answers_in_time_and_nothing_waits_past_its_deadline(self, portal):
        """SIGSTOP, connections open: health 200 within 1 s, run endpoints cut at the deadline."""
        before_metrics = parse(portal.get("/metrics")[2])
        open_connections(portal)
        portal.cluster.pause()
        health = many(portal, ["/v1/plugins", "/v1/plugins/ocr/health"], 15)
        assert {status for status, *_ in health} == {200}
        assert max(took for *_, took in health) < HEALTH_BUDGET_S
        assert portal.get("/v1/plugins/ghost/health")[0] == 404
        # The refresher's read is cut at its 1 s deadline: then every record says stale.
        wait_until(
            lambda: portal.get("/v1/plugins/ocr/health")[2]["stale"] is True,
            timeout=10,
            what="health marked stale while the database hangs",
        )
        record = portal.get("/v1/plugins/ocr/health")[2]
        assert record["stale_since"] is not None and record["state"] == "INITIALIZED"
        runs = many(portal, ["/v1/plugins/ocr/runs"], 4)
        assert {status for status, *_ in runs} == {503}
        assert max(took for *_, took in runs) < DB_DEADLINE_S + 6  # a new connection: 5 s max
        status, _, body, took = portal.get("/readyz")
        assert (status, body["failed"]) == (503, ["database"]) and took < 5
        during = parse(portal.get("/metrics")[2])
        assert during["portal_database_up"][()] == 0
        assert during["portal_plugin_state"] == before_metrics["portal_plugin_state"]

    def test_3_hung__a_restarted_worker_answers_stale_at_once(self, portal):
        """Both workers killed during the outage: their replacements answer 200 stale at once."""
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

    def test_4_resumed__fresh_again_and_one_line_per_outage(self, portal):
        """SIGCONT: health is fresh again; the log has one line at the start and one at the end."""
        portal.cluster.resume()
        wait_until(
            lambda: portal.get("/v1/plugins/ocr/health")[2]["stale"] is False,
            timeout=30,
            what="fresh health after the database resumed",
        )
        log = portal.server.log_text()
        assert log.count(OUTAGE_STARTS) == 1, log
        assert log.count(OUTAGE_ENDS) == 1, log
        assert "Service Unavailable" not in log  # no request logger line per 503
        wait_until(lambda: portal.get("/readyz")[0] == 200, timeout=30, what="ready again")

    def test_5_stopped__health_answers_in_time_and_readyz_names_the_database(self, portal):
        """Database stopped: health 200 within 1 s, runs 503 fast, readyz 503, metrics kept."""
        portal.cluster.stop()
        try:
            wait_until(
                lambda: portal.get("/v1/plugins/vision/health")[2]["stale"] is True,
                timeout=10,
                what="health marked stale while the database is stopped",
            )
            health = many(portal, ["/v1/plugins", "/v1/plugins/vision/health"], 10)
            assert {status for status, *_ in health} == {200}
            assert max(took for *_, took in health) < HEALTH_BUDGET_S
            started = time.monotonic()
            assert portal.get("/v1/plugins/ocr/runs")[0] == 503
            assert time.monotonic() - started < DB_DEADLINE_S + 6
            status, _, body, _ = portal.get("/readyz")
            assert (status, body["failed"]) == (503, ["database"])
            samples = parse(portal.get("/metrics")[2])
            assert samples["portal_database_up"][()] == 0
            assert samples["portal_plugin_state"][of("broken", state="FAILED")] == 1
        finally:
            portal.cluster.start()
        wait_until(
            lambda: portal.get("/v1/plugins")[2][0]["stale"] is False,
            timeout=30,
            what="fresh health after the database restarted",
        )
        assert portal.server.log_text().count(OUTAGE_STARTS) == 2
