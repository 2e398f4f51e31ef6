"""GET /metrics: Prometheus text read from the registry at scrape time, true for Prometheus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from plugins_app import metrics_reading, services
from plugins_app.health_refresher import refresh_once
from plugins_app.models import PluginRun, RunStatus
from tests.concurrency_support import database_url
from tests.metrics_support import of, scrape, scrape_in_new_process

ROOT = Path(__file__).resolve().parents[2]
HISTOGRAM = "portal_plugin_run_duration_seconds"


def histogram_of(samples, plugin: str) -> dict[str, float]:
    """The plugin's histogram samples: {"0.01": ..., "+Inf": ..., "count": ..., "sum": ...}."""
    found = {
        dict(key)["le"]: value
        for key, value in samples[f"{HISTOGRAM}_bucket"].items()
        if dict(key)["plugin"] == plugin
    }
    found["count"] = samples[f"{HISTOGRAM}_count"][of(plugin)]
    found["sum"] = samples[f"{HISTOGRAM}_sum"][of(plugin)]
    return found


@pytest.mark.django_db
class TestMetrics:
    def test_metrics__state_per_plugin(self, api_client, make_plugin):
        """Each plugin has 1 for its state and 0 for every other; totals by state too."""
        make_plugin("ok")
        services.plugin_mark_unavailable(name="gpu", reason="No CUDA GPU found here", actor="t")
        samples = scrape(api_client)
        state = samples["portal_plugin_state"]
        assert state[of("ok", state="INITIALIZED")] == 1
        assert state[of("ok", state="FAILED")] == 0
        assert state[of("gpu", state="UNAVAILABLE")] == 1
        assert sum(v for k, v in state.items() if dict(k)["plugin"] == "gpu") == 1
        assert samples["portal_plugins"][(("state", "UNAVAILABLE"),)] == 1
        assert samples["portal_plugins"][(("state", "RUNNING"),)] == 0
        assert samples["portal_database_up"][()] == 1
        assert samples["portal_metrics_age_seconds"][()] == 0

    def test_metrics__counters_and_consecutive_failures(self, api_client, make_plugin, finish_run):
        """Success and error counters and consecutive failures match the registry."""
        make_plugin("ocr")
        finish_run("ocr")
        finish_run("ocr", status="failed")
        finish_run("ocr", status="timed_out")
        services.plugin_disable(name="ocr", note="flapping", actor="user:ann")
        samples = scrape(api_client)
        assert samples["portal_plugin_runs_succeeded_total"][of("ocr")] == 1
        assert samples["portal_plugin_runs_failed_total"][of("ocr")] == 2
        assert samples["portal_plugin_consecutive_failures"][of("ocr")] == 2
        assert samples["portal_plugin_enabled"][of("ocr")] == 0
        assert samples["portal_plugin_runs_in_progress"][of("ocr")] == 0

    def test_metrics__duration_histogram(self, api_client, make_plugin, finish_run):
        """Run durations land in cumulative buckets with their count and sum, per plugin."""
        make_plugin("ocr")
        make_plugin("idle")
        for duration_ms in (5.0, 200.0, 3000.0):
            finish_run("ocr", duration_ms=duration_ms)
        finish_run("ocr", status="interrupted", duration_ms=None)  # no duration: not observed
        ocr = histogram_of(scrape(api_client), "ocr")
        assert (ocr["0.01"], ocr["0.1"], ocr["0.25"], ocr["5.0"], ocr["+Inf"]) == (1, 1, 2, 3, 3)
        assert ocr["count"] == 3
        assert ocr["sum"] == pytest.approx(3.205)
        assert histogram_of(scrape(api_client), "idle")["+Inf"] == 0

    def test_histogram__buckets_never_go_down(self, api_client, make_plugin, finish_run):
        """Scrape after scrape, as runs finish and hours pass, no histogram sample falls."""
        make_plugin("ocr")
        previous = histogram_of(scrape(api_client), "ocr")
        for duration_ms in (0.5, 9_000.0, 400_000.0, 50.0, 120_000.0, 10.0):
            # An hour passes for the runs so far: each was queued an hour earlier than it was.
            PluginRun.objects.update(queued_at=F("queued_at") - timedelta(hours=1))
            finish_run("ocr", duration_ms=duration_ms)
            current = histogram_of(scrape(api_client), "ocr")
            assert all(current[key] >= previous[key] for key in previous), (previous, current)
            assert current["count"] == previous["count"] + 1
            assert current["+Inf"] == current["count"]
            previous = current
        assert (previous["0.01"], previous["0.05"], previous["300.0"]) == (2, 3, 5)

    def test_histogram__runs_pruned_stay_counted(self, api_client, make_plugin, finish_run):
        """Deleting old runs (prunepluginruns) lowers no bucket, count or sum."""
        make_plugin("ocr")
        for duration_ms in (20.0, 700.0, 4_000.0):
            finish_run("ocr", duration_ms=duration_ms)
        before = histogram_of(scrape(api_client), "ocr")
        pruned = services.runs_prune(older_than=timedelta(0), now=timezone.now() + timedelta(1))
        assert pruned == 3
        assert histogram_of(scrape(api_client), "ocr") == before

    def test_totals__counter_reset_in_the_admin_leaves_them(
        self, api_client, make_plugin, finish_run
    ):
        """Resetting counters zeroes the health record's counts; the _total series stay as read."""
        make_plugin("ocr")
        finish_run("ocr", duration_ms=30.0)
        finish_run("ocr", status="failed", outcome="error")
        before = scrape(api_client)
        services.plugin_reset_counters(name="ocr", note="new model", actor="user:ann")
        health = api_client.get("/v1/plugins/ocr/health").json()
        assert (health["success_count"], health["error_count"]) == (0, 0)
        after = scrape(api_client)
        for series in (
            "portal_plugin_runs_succeeded_total",
            "portal_plugin_runs_failed_total",
            "portal_plugin_run_failures_total",
        ):
            assert after[series] == before[series], series
        assert histogram_of(after, "ocr") == histogram_of(before, "ocr")
        assert after["portal_plugin_consecutive_failures"][of("ocr")] == 0  # a gauge: it may

    def test_failures__counted_by_outcome(self, api_client, make_plugin, finish_run):
        """Each failure counts under its outcome; together they are runs_failed_total."""
        make_plugin("ocr", quarantine_after=0)  # nine failures in a row, none refused
        for status, outcome in [
            (RunStatus.FAILED, "error"),
            (RunStatus.FAILED, "error"),
            (RunStatus.TIMED_OUT, "timeout"),
            (RunStatus.CRASHED, "memory"),
            (RunStatus.CRASHED, "crashed"),
            (RunStatus.FAILED, "exited"),
            (RunStatus.INTERRUPTED, "interrupted"),
            (RunStatus.FAILED, ""),  # a kind not known: its status says what happened
            (RunStatus.FAILED, "ok"),  # a success the database refused to store: a failure
            (RunStatus.SUCCEEDED, "ok"),
        ]:
            finish_run("ocr", status=status, outcome=outcome)
        samples = scrape(api_client)
        failures = {
            dict(key)["outcome"]: value
            for key, value in samples["portal_plugin_run_failures_total"].items()
            if dict(key)["plugin"] == "ocr"
        }
        assert failures == {
            "error": 2,
            "timeout": 1,
            "memory": 1,
            "crashed": 1,
            "exited": 1,
            "interrupted": 1,
            "failed": 2,
        }
        assert samples["portal_plugin_runs_failed_total"][of("ocr")] == 9
        assert samples["portal_plugin_runs_succeeded_total"][of("ocr")] == 1

    def test_cancelled__counted_apart_from_failures(self, api_client, make_plugin, finish_run):
        """Cancelled runs are runs_cancelled_total, never in runs_failed_total or failures."""
        make_plugin("ocr")
        finish_run("ocr", status=RunStatus.FAILED, outcome="error")
        for _ in range(2):
            run = services.run_queue(name="ocr", params={}, actor="t")
            services.run_start(run_id=run.pk, worker="w:1")
            services.run_cancel(run_id=run.pk, actor="api:ann")
        samples = scrape(api_client)
        assert samples["portal_plugin_runs_cancelled_total"][of("ocr")] == 2
        assert samples["portal_plugin_runs_failed_total"][of("ocr")] == 1
        outcomes = {dict(key)["outcome"] for key in samples["portal_plugin_run_failures_total"]}
        assert outcomes == {"error"}

    def test_quarantined__gauge_per_plugin_and_total(self, api_client, make_plugin, finish_run):
        """A plugin quarantined after failing in a row is 1, the others 0; the total counts it."""
        make_plugin("ocr", quarantine_after=2)
        make_plugin("fine")
        finish_run("ocr", status="crashed")
        finish_run("ocr", status="crashed")
        samples = scrape(api_client)
        assert samples["portal_plugin_quarantined"][of("ocr")] == 1
        assert samples["portal_plugin_quarantined"][of("fine")] == 0
        assert samples["portal_plugins_quarantined"][()] == 1
        services.quarantine_lift(name="ocr", note="", actor="user:ann")
        assert scrape(api_client)["portal_plugins_quarantined"][()] == 0

    def test_runs__queued_and_in_progress_per_plugin(self, api_client, make_plugin):
        """Runs waiting and runs executing are reported per plugin, zero for an idle one."""
        make_plugin("ocr")
        make_plugin("idle")
        for _ in range(3):
            services.run_queue(name="ocr", params={}, actor="t")
        started = services.run_queue(name="ocr", params={}, actor="t")
        services.run_start(run_id=started.pk, worker="test:1")
        samples = scrape(api_client)
        assert samples["portal_plugin_runs_queued"][of("ocr")] == 3
        assert samples["portal_plugin_runs_in_progress"][of("ocr")] == 1
        assert samples["portal_plugin_runs_queued"][of("idle")] == 0
        assert samples["portal_plugin_runs_in_progress"][of("idle")] == 0

    def test_snapshot_age__seconds_since_the_health_snapshot_was_read(
        self, api_client, make_plugin, settings
    ):
        """The age is how long ago the node's snapshot was read; absent before the first read."""
        make_plugin("ocr")
        assert "portal_health_snapshot_age_seconds" not in scrape(api_client)
        refresh_once()
        path = settings.PORTAL_HEALTH_SNAPSHOT_FILE
        document = json.loads(path.read_text())
        document["read_at"] -= 90
        path.write_text(json.dumps(document))
        age = scrape(api_client)["portal_health_snapshot_age_seconds"][()]
        assert 90 <= age < 120
        assert api_client.get("/v1/plugins").status_code == 200  # a read refreshes it here
        assert scrape(api_client)["portal_health_snapshot_age_seconds"][()] < 30

    def test_metrics__query_count_does_not_grow_with_plugins(
        self, api_client, make_plugin, finish_run
    ):
        """A scrape costs the same number of queries for 2 plugins as for 20."""

        def queries() -> int:
            with CaptureQueriesContext(connection) as captured:
                scrape(api_client)
            return len(captured)

        for _ in range(2):
            finish_run(make_plugin().name)
        few = queries()
        for _ in range(18):
            name = make_plugin().name
            finish_run(name)
            finish_run(name, status="failed", outcome="error")
            services.run_queue(name=name, params={}, actor="t")
        assert queries() == few

    def test_metrics__same_with_trailing_slash(self, api_client, make_plugin):
        """/metrics/ answers like /metrics."""
        make_plugin("ok")
        response = api_client.get("/metrics/")
        assert response.status_code == 200
        assert 'portal_plugin_enabled{plugin="ok"} 1.0' in response.content.decode()

    def test_metrics__wrong_method_is_405(self, api_client):
        """/metrics is read-only."""
        assert api_client.post("/metrics").status_code == 405


@pytest.mark.django_db(transaction=True)
@pytest.mark.portal_processes
class TestMetricsAcrossProcesses:
    def test_metrics__counts_runs_recorded_by_another_process(self, api_client, make_plugin):
        """Runs recorded by a separate OS process show up: nothing is counted in memory."""
        make_plugin("shared")
        env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict)}
        subprocess.run(
            [sys.executable, "-m", "tests.concurrency_worker", "shared", "4"],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=120,
        )
        samples = scrape(api_client)
        assert samples["portal_plugin_runs_succeeded_total"][of("shared")] == 2
        assert samples["portal_plugin_runs_failed_total"][of("shared")] == 2
        assert samples[f"{HISTOGRAM}_count"][of("shared")] == 4

    def test_metrics__a_new_process_scrapes_the_same_series(
        self, api_client, make_plugin, finish_run, settings
    ):
        """A server process started now (a restart, another worker) reports what this one does."""
        make_plugin("ocr")
        for duration_ms in (3.0, 800.0):
            finish_run("ocr", duration_ms=duration_ms)
        finish_run("ocr", status="crashed", outcome="memory")
        here = scrape(api_client)
        there = scrape_in_new_process(
            database_url=database_url(connection.settings_dict),
            var_dir=Path(settings.PORTAL_METRICS_LAST_READING_FILE).parent,
        )
        for series in (
            f"{HISTOGRAM}_bucket",
            f"{HISTOGRAM}_count",
            f"{HISTOGRAM}_sum",
            "portal_plugin_runs_succeeded_total",
            "portal_plugin_run_failures_total",
        ):
            assert there[series] == here[series], series


LIVE_ONLY = {
    "portal_database_up",
    "portal_metrics_age_seconds",
    "portal_health_snapshot_age_seconds",
}


def plugin_series(samples) -> dict:
    """The series read from the registry (what an outage serves from the last reading)."""
    return {name: values for name, values in samples.items() if name not in LIVE_ONLY}


@pytest.fixture
def failing_fleet(make_plugin, finish_run):
    """'ocr' FAILED after runs of several outcomes, 'ok' healthy with a queued run."""
    make_plugin("ocr")
    finish_run("ocr", duration_ms=40.0)
    finish_run("ocr", status="timed_out", outcome="timeout", duration_ms=30_000.0)
    make_plugin("ok")
    services.run_queue(name="ok", params={}, actor="t")


@pytest.mark.django_db(transaction=True)
class TestMetricsDuringOutage:
    def test_outage__last_known_series_served_with_database_down(
        self, api_client, failing_fleet, database_outage
    ):
        """The database down: the last series read are served, with portal_database_up 0."""
        assert api_client.get("/v1/plugins").status_code == 200  # the health snapshot
        before = scrape(api_client)
        with database_outage():
            during = scrape(api_client)
            again = scrape(api_client)
        assert during["portal_database_up"][()] == 0
        assert plugin_series(during) == plugin_series(before)
        assert during["portal_plugin_state"][of("ocr", state="FAILED")] == 1  # alerts keep firing
        assert (
            0 <= during["portal_metrics_age_seconds"][()] <= again["portal_metrics_age_seconds"][()]
        )
        assert during["portal_health_snapshot_age_seconds"][()] >= 0
        after = scrape(api_client)
        assert after["portal_database_up"][()] == 1
        assert after["portal_metrics_age_seconds"][()] == 0

    def test_outage__nothing_read_yet_reports_only_the_database_down(
        self, api_client, failing_fleet, database_outage
    ):
        """A node that never read the registry claims nothing during an outage but that."""
        with database_outage():
            samples = scrape(api_client)
        assert samples == {"portal_database_up": {(): 0.0}}

    @pytest.mark.portal_processes
    def test_outage__a_process_started_during_it_serves_the_same_series(
        self, api_client, failing_fleet, database_outage, settings
    ):
        """A server process started during the outage serves the node's last reading too."""
        before = scrape(api_client)
        with database_outage():
            there = scrape_in_new_process(
                database_url=database_url(connection.settings_dict),
                var_dir=Path(settings.PORTAL_METRICS_LAST_READING_FILE).parent,
            )
        assert there["portal_database_up"][()] == 0
        assert plugin_series(there) == plugin_series(before)


class TestLastKnownReading:
    def test_remember__an_older_reading_never_replaces_a_newer_one(self, tmp_path):
        """Scrapes finishing out of order: the node keeps the newer reading, so no total falls."""
        path = tmp_path / "var" / "metrics-last-reading"
        newer = {"read_at": 200.0, "plugins": [{"name": "ocr", "runs": {"ok": 5}}]}
        older = {"read_at": 100.0, "plugins": [{"name": "ocr", "runs": {"ok": 4}}]}
        metrics_reading.remember(newer, path)
        metrics_reading.remember(older, path)
        assert metrics_reading.last_known(path) == newer

    def test_last_known__a_damaged_file_is_no_reading(self, tmp_path, caplog):
        """A file cut short (a crash while the disk was full) is ignored, with a warning."""
        path = tmp_path / "metrics-last-reading"
        path.write_text('{"read_at": 12')
        assert metrics_reading.last_known(path) is None
        assert "not JSON" in caplog.text

    @pytest.mark.django_db
    def test_remember__a_disk_that_refuses_writes_costs_no_scrape(
        self, api_client, make_plugin, settings, tmp_path, caplog
    ):
        """The reading cannot be kept: scrapes still answer from the database, one warning said."""
        make_plugin("ocr")
        blocked = tmp_path / "a file, not a directory"
        blocked.write_text("")
        settings.PORTAL_METRICS_LAST_READING_FILE = blocked / "metrics-last-reading"
        for _ in range(3):
            assert scrape(api_client)["portal_database_up"][()] == 1
        warnings = [r for r in caplog.records if "Could not keep the last metrics" in r.message]
        assert len(warnings) == 1
