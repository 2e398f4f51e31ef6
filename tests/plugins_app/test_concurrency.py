"""Registry updates from many threads and separate processes: exact counters, no lost events."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection, connections

from plugins_app.models import EventKind, Plugin, PluginEvent, PluginRun, RunStatus
from tests.concurrency_support import database_url, record_runs
from tests.metrics_support import of, scrape

ROOT = Path(__file__).resolve().parents[2]
THREADS = 8
PROCESSES = 2
RUNS = 6
PLUGINS = ["alpha", "beta"]


def assert_history_is_consistent(plugin: Plugin) -> None:
    """Each state event starts where the previous one ended, and the last is the state."""
    events = PluginEvent.objects.filter(plugin=plugin, kind=EventKind.STATE_CHANGED)
    chain = list(events.order_by("created_at", "id").values_list("from_state", "to_state"))
    for (_, previous_to), (current_from, _) in itertools.pairwise(chain):
        assert current_from == previous_to, chain
    assert chain[-1][1] == plugin.state


def threaded_runs(worker: str) -> None:
    try:
        record_runs(PLUGINS, RUNS, worker=worker)
    finally:
        connections.close_all()


@pytest.mark.django_db(transaction=True)
@pytest.mark.portal_processes
class TestConcurrentOutcomes:
    def test_threads_and_processes__exact_counters(self, make_plugin, client):
        """8 threads and 2 processes recording runs at once lose and double nothing."""
        for name in PLUGINS:
            # Interleaved odd runs can fail 5 in a row: no quarantine, every run is recorded.
            make_plugin(name, quarantine_after=0)
        env = {**os.environ, "DATABASE_URL": database_url(connection.settings_dict)}
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.concurrency_worker", ",".join(PLUGINS), str(RUNS)],
                cwd=ROOT,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(PROCESSES)
        ]
        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(threaded_runs, f"thread:{i}") for i in range(THREADS)]:
                future.result()
        for process in processes:
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr

        writers = THREADS + PROCESSES
        successes = writers * len(range(0, RUNS, 2))
        failures = writers * RUNS - successes
        for name in PLUGINS:
            plugin = Plugin.objects.get(name=name)
            runs = PluginRun.objects.filter(plugin=plugin)
            assert (plugin.success_count, plugin.error_count) == (successes, failures)
            assert plugin.running_count == 0
            assert runs.filter(status=RunStatus.SUCCEEDED).count() == successes
            assert runs.filter(status=RunStatus.FAILED).count() == failures
            assert plugin.avg_duration_ms == pytest.approx(1.0)
            assert_history_is_consistent(plugin)
        samples = scrape(client)  # the cumulative tallies, first rows of each outcome included
        for name in PLUGINS:
            assert samples["portal_plugin_runs_succeeded_total"][of(name)] == successes
            assert samples["portal_plugin_runs_failed_total"][of(name)] == failures
            histogram = "portal_plugin_run_duration_seconds"
            assert samples[f"{histogram}_bucket"][of(name, le="0.01")] == writers * RUNS
            assert samples[f"{histogram}_sum"][of(name)] == pytest.approx(writers * RUNS / 1000)
