"""`GET /metrics`: plugin health and run totals in Prometheus text format, true for Prometheus.

Each scrape reads the registry (plugins_app.metrics_reading: three queries whatever the number
of plugins), so every server process reports the same numbers. Run counts and the duration
histogram come from the cumulative tallies in the database: they never go down, whoever
resets counters or prunes runs. While the database cannot be read, the scrape serves the
node's last reading with `portal_database_up 0`, so alerts keep firing instead of resolving.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from plugins_app import health_snapshot, metrics_reading
from plugins_app.api.deadline import read_deadline
from plugins_app.metrics_reading import PluginReading, Reading
from plugins_app.models import DURATION_BUCKETS, PluginState, RunOutcomeKind

logger = logging.getLogger("plugins_app.metrics")


class PluginCollector:
    """A prometheus_client collector over the registry; reports the database down, not a 500."""

    def describe(self) -> list[Metric]:
        return []  # nothing to announce: collect() reads the database only when scraped

    def collect(self) -> Iterator[Metric]:
        last_known = settings.PORTAL_METRICS_LAST_READING_FILE
        snapshot = health_snapshot.reader.current()
        reading: Reading | None = None
        database_up = 0
        # While the node's refresher finds the database down, a scrape does not wait on it too.
        if snapshot is None or snapshot.database_up:
            try:
                with read_deadline(settings.PORTAL_HEALTH_DB_TIMEOUT_S):
                    reading = metrics_reading.read_registry()
            except Exception as error:
                # Not logged loudly: the refresher logs the outage once for the node.
                logger.debug("Metrics read failed: %s", error)
            else:
                database_up = 1
                metrics_reading.remember(reading, last_known)
        if reading is None:
            reading = metrics_reading.last_known(last_known)
        yield _gauge(
            "portal_database_up",
            "1 when this scrape read the registry; 0 when it could not, and the other series "
            "are the node's last reading.",
            database_up,
        )
        if snapshot is not None and snapshot.read_at:
            yield _gauge(
                "portal_health_snapshot_age_seconds",
                "Seconds since the node's health snapshot, which the health endpoints answer "
                "from, was read from the database.",
                snapshot.age_s(),
            )
        if reading is None:
            return  # the database is down and this node never read it: nothing else is known
        yield _gauge(
            "portal_metrics_age_seconds",
            "Seconds since the plugin series of this scrape were read from the database "
            "(0 when this scrape read them).",
            0 if database_up else max(0.0, time.time() - reading["read_at"]),
        )
        yield from _state_metrics(reading["plugins"])
        yield from _run_metrics(reading["plugins"])
        if reading.get("workers_alive"):
            yield _workers_alive(reading["workers_alive"])


def _workers_alive(per_queue: dict[str, int]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(
        "portal_workers_alive",
        "Live worker nodes (celery executor) consuming each queue; 0 for a queue that plugins "
        "route to and no live worker serves, so its runs wait.",
        labels=["queue"],
    )
    for queue, count in sorted(per_queue.items()):
        gauge.add_metric([queue], count)
    return gauge


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge


def _state_metrics(plugins: list[PluginReading]) -> Iterator[Metric]:
    by_state = GaugeMetricFamily(
        "portal_plugins", "Plugins registered, by state.", labels=["state"]
    )
    for value in PluginState.values:
        by_state.add_metric([value], sum(1 for plugin in plugins if plugin["state"] == value))
    yield by_state
    yield _gauge(
        "portal_plugins_quarantined",
        "Plugins quarantined after failing in a row (runs refused, or one probe let through).",
        sum(1 for plugin in plugins if plugin.get("quarantined", False)),
    )

    state = GaugeMetricFamily(
        "portal_plugin_state",
        "1 for the state the plugin is in, 0 for the others.",
        labels=["plugin", "state"],
    )
    enabled = GaugeMetricFamily(
        "portal_plugin_enabled", "1 when the plugin takes runs, 0 when disabled.", labels=["plugin"]
    )
    consecutive = GaugeMetricFamily(
        "portal_plugin_consecutive_failures",
        "Failed runs in a row since the last success (an operator's reset zeroes it).",
        labels=["plugin"],
    )
    quarantined = GaugeMetricFamily(
        "portal_plugin_quarantined",
        "1 while the plugin is quarantined (its runs refused until a probe succeeds), else 0.",
        labels=["plugin"],
    )
    for plugin in plugins:
        name = plugin["name"]
        for value in PluginState.values:
            state.add_metric([name, value], 1 if plugin["state"] == value else 0)
        enabled.add_metric([name], 1 if plugin["enabled"] else 0)
        consecutive.add_metric([name], plugin["consecutive_failures"])
        quarantined.add_metric([name], 1 if plugin.get("quarantined", False) else 0)
    yield from (state, enabled, consecutive, quarantined)


def _run_metrics(plugins: list[PluginReading]) -> Iterator[Metric]:
    running = GaugeMetricFamily(
        "portal_plugin_runs_in_progress", "Runs executing now.", labels=["plugin"]
    )
    queued = GaugeMetricFamily(
        "portal_plugin_runs_queued", "Runs waiting to start.", labels=["plugin"]
    )
    succeeded = CounterMetricFamily(
        "portal_plugin_runs_succeeded",
        "Runs that succeeded, ever (never reset).",
        labels=["plugin"],
    )
    failed = CounterMetricFamily(
        "portal_plugin_runs_failed",
        "Runs that failed, timed out, crashed or were interrupted, ever (never reset).",
        labels=["plugin"],
    )
    cancelled = CounterMetricFamily(
        "portal_plugin_runs_cancelled",
        "Runs cancelled by an operator, ever (never reset; not failures).",
        labels=["plugin"],
    )
    failures = CounterMetricFamily(
        "portal_plugin_run_failures",
        "Failed runs by outcome (error, timeout, memory, crashed, exited, interrupted, ...), "
        "ever; a series appears at the plugin's first failure of that kind.",
        labels=["plugin", "outcome"],
    )
    durations = HistogramMetricFamily(
        "portal_plugin_run_duration_seconds",
        "Duration of every finished run with a duration, ever (never reset).",
        labels=["plugin"],
    )
    ok, stopped = RunOutcomeKind.OK.value, RunOutcomeKind.CANCELLED.value
    for plugin in plugins:
        name = plugin["name"]
        running.add_metric([name], plugin["running"])
        queued.add_metric([name], plugin["queued"])
        succeeded.add_metric([name], plugin["runs"].get(ok, 0))
        cancelled.add_metric([name], plugin["runs"].get(stopped, 0))
        failed_kinds = {kind: n for kind, n in plugin["runs"].items() if kind not in (ok, stopped)}
        failed.add_metric([name], sum(failed_kinds.values()))
        for kind, runs in sorted(failed_kinds.items()):
            failures.add_metric([name, kind], runs)
        buckets = [
            (repr(float(bound)), count)
            for (_, bound), count in zip(DURATION_BUCKETS, plugin["buckets"], strict=True)
        ]
        buckets.append(("+Inf", plugin["timed_runs"]))
        durations.add_metric([name], buckets, plugin["duration_s"])
    yield from (running, queued, succeeded, cancelled, failed, failures, durations)


registry = CollectorRegistry(auto_describe=False)
registry.register(PluginCollector())


@csrf_exempt  # read-only: a POST is a 405, not a CSRF 403
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    # The classic text format (0.0.4): what every Prometheus version scrapes.
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
