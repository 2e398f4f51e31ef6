"""`GET /metrics`: plugin health in Prometheus text format, read from the database per scrape.

Reading the registry at scrape time (not counting in process memory) keeps the numbers right
however many server processes there are. Two queries per scrape: the plugin rows, and one
bounded aggregate over the runs queued in the last PORTAL_METRICS_WINDOW_S seconds for the
duration histogram (a sliding window: use `histogram_quantile` on its buckets directly).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from plugins_app import selectors
from plugins_app.api.deadline import read_deadline
from plugins_app.models import PluginState
from plugins_app.snapshot import ReadFailures

# Run duration bucket bounds, in seconds (plugins range from milliseconds to minutes).
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

metrics_read_failures = ReadFailures("Metrics read", "reporting portal_database_up 0")


class PluginCollector:
    """A prometheus_client collector over the selectors; reports the database down, not a 500."""

    def describe(self) -> list[Metric]:
        return []  # nothing to announce: collect() reads the database only when scraped

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "portal_database_up", "1 when this scrape could read the plugin registry, else 0."
        )
        try:
            with read_deadline(settings.PORTAL_HEALTH_DB_TIMEOUT_S):
                plugins = selectors.plugin_metric_rows()
                since = timezone.now() - timedelta(seconds=settings.PORTAL_METRICS_WINDOW_S)
                durations = selectors.run_duration_buckets(
                    since=since, bounds_ms=tuple(bound * 1000 for bound in DURATION_BUCKETS_S)
                )
        except Exception as error:
            metrics_read_failures.failed(error)
            up.add_metric([], 0)
            yield up
            return
        metrics_read_failures.succeeded()
        up.add_metric([], 1)
        yield up
        yield from _plugin_metrics(plugins)
        yield _duration_histogram(plugins, durations)


def _plugin_metrics(plugins: list[dict]) -> Iterator[Metric]:
    by_state = GaugeMetricFamily(
        "portal_plugins", "Plugins registered, by state.", labels=["state"]
    )
    for value in PluginState.values:
        by_state.add_metric([value], sum(1 for row in plugins if row["state"] == value))
    yield by_state

    state = GaugeMetricFamily(
        "portal_plugin_state",
        "1 for the state the plugin is in, 0 for the others.",
        labels=["plugin", "state"],
    )
    enabled = GaugeMetricFamily(
        "portal_plugin_enabled", "1 when the plugin takes runs, 0 when disabled.", labels=["plugin"]
    )
    succeeded = CounterMetricFamily(
        "portal_plugin_runs_succeeded",
        "Runs that succeeded (since the counters were last reset).",
        labels=["plugin"],
    )
    failed = CounterMetricFamily(
        "portal_plugin_runs_failed",
        "Runs that failed, timed out, crashed or were interrupted (since the last reset).",
        labels=["plugin"],
    )
    consecutive = GaugeMetricFamily(
        "portal_plugin_consecutive_failures",
        "Failed runs in a row since the last success.",
        labels=["plugin"],
    )
    running = GaugeMetricFamily(
        "portal_plugin_runs_in_progress", "Runs executing now.", labels=["plugin"]
    )
    for row in plugins:
        name = row["name"]
        for value in PluginState.values:
            state.add_metric([name, value], 1 if row["state"] == value else 0)
        enabled.add_metric([name], 1 if row["enabled"] else 0)
        succeeded.add_metric([name], row["success_count"])
        failed.add_metric([name], row["error_count"])
        consecutive.add_metric([name], row["consecutive_failures"])
        running.add_metric([name], row["running_count"])
    yield from (state, enabled, succeeded, failed, consecutive, running)


def _duration_histogram(plugins: list[dict], durations: dict[int, dict]) -> Metric:
    histogram = HistogramMetricFamily(
        "portal_plugin_run_duration_seconds",
        f"Duration of finished runs queued in the last {settings.PORTAL_METRICS_WINDOW_S} s "
        "(a sliding window).",
        labels=["plugin"],
    )
    empty = {"buckets": [0] * len(DURATION_BUCKETS_S), "count": 0, "sum_ms": 0.0}
    for row in plugins:
        data = durations.get(row["id"], empty)
        buckets = [
            (_bound(bound), count)
            for bound, count in zip(DURATION_BUCKETS_S, data["buckets"], strict=True)
        ]
        buckets.append(("+Inf", data["count"]))
        histogram.add_metric([row["name"]], buckets, data["sum_ms"] / 1000)
    return histogram


def _bound(seconds: float) -> str:
    return repr(float(seconds))


registry = CollectorRegistry(auto_describe=False)
registry.register(PluginCollector())


@csrf_exempt  # read-only: a POST is a 405, not a CSRF 403
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    # The classic text format (0.0.4): what every Prometheus version scrapes.
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
