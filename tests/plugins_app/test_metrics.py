"""GET /metrics: Prometheus text read from the registry at scrape time."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from plugins_app import services
from plugins_app.models import PluginRun
from tests.concurrency_support import database_url

ROOT = Path(__file__).resolve().parents[2]


def scrape(client) -> dict[str, dict[tuple, float]]:
    """Samples by name, each keyed by its sorted label pairs."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def of(plugin: str, **labels: str) -> tuple:
    return tuple(sorted({"plugin": plugin, **labels}.items()))


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
        samples = scrape(api_client)
        buckets = samples["portal_plugin_run_duration_seconds_bucket"]
        assert buckets[of("ocr", le="0.01")] == 1
        assert buckets[of("ocr", le="0.1")] == 1
        assert buckets[of("ocr", le="0.25")] == 2
        assert buckets[of("ocr", le="5.0")] == 3
        assert buckets[of("ocr", le="+Inf")] == 3
        assert samples["portal_plugin_run_duration_seconds_count"][of("ocr")] == 3
        assert samples["portal_plugin_run_duration_seconds_sum"][of("ocr")] == pytest.approx(3.205)
        assert buckets[of("idle", le="+Inf")] == 0

    def test_metrics__histogram_covers_the_recent_window(
        self, api_client, make_plugin, finish_run, settings
    ):
        """Runs queued before PORTAL_METRICS_WINDOW_S are left out of the histogram."""
        settings.PORTAL_METRICS_WINDOW_S = 600
        make_plugin("ocr")
        old = finish_run("ocr", duration_ms=50.0)
        finish_run("ocr", duration_ms=70.0)
        PluginRun.objects.filter(pk=old.pk).update(queued_at=timezone.now() - timedelta(hours=1))
        samples = scrape(api_client)
        assert samples["portal_plugin_run_duration_seconds_count"][of("ocr")] == 1
        assert samples["portal_plugin_run_duration_seconds_sum"][of("ocr")] == pytest.approx(0.07)
        assert samples["portal_plugin_runs_succeeded_total"][of("ocr")] == 2  # counters: all time

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
            finish_run(make_plugin().name)
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
        assert samples["portal_plugin_run_duration_seconds_count"][of("shared")] == 4
