"""Reads shared by the API, the admin, the commands and the metrics, so they show one truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from plugins_app.errors import PluginNotFound, RunNotFound
from plugins_app.models import FINISHED_RUN_STATUSES, Plugin, PluginRun

HEALTH_FIELDS = (
    "name",
    "state",
    "description",
    "reason",
    "version",
    "uptime_seconds",
    "success_count",
    "error_count",
    "enabled",
    "consecutive_failures",
    "last_run_at",
    "last_success_at",
    "last_error_at",
    "last_duration_ms",
    "avg_duration_ms",
    "checked_at",
    "stale",
)

# Only the columns a health record needs, so a list of thousands stays one light query.
_HEALTH_COLUMNS = (
    "name",
    "state",
    "description",
    "reason",
    "version",
    "available_since",
    "success_count",
    "error_count",
    "enabled",
    "consecutive_failures",
    "last_run_at",
    "last_success_at",
    "last_error_at",
    "last_duration_ms",
    "avg_duration_ms",
)


def plugin_list(*, state: str | None = None, enabled: bool | None = None) -> QuerySet[Plugin]:
    plugins = Plugin.objects.all().order_by("name")
    if state:
        plugins = plugins.filter(state=state)
    if enabled is not None:
        plugins = plugins.filter(enabled=enabled)
    return plugins


def plugin_get(*, name: str) -> Plugin:
    try:
        return Plugin.objects.get(name=name)
    except Plugin.DoesNotExist:
        raise PluginNotFound(name) from None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def health_record(plugin: Plugin, *, now: datetime | None = None) -> dict[str, Any]:
    """One plugin's health: every key always present, null where unknown."""
    now = now or timezone.now()
    return {
        "name": plugin.name,
        "state": plugin.state,
        "description": plugin.description or None,
        "reason": plugin.reason or None,
        "version": plugin.version or None,
        "uptime_seconds": _round(plugin.uptime_seconds(now)),
        "success_count": plugin.success_count,
        "error_count": plugin.error_count,
        "enabled": plugin.enabled,
        "consecutive_failures": plugin.consecutive_failures,
        "last_run_at": _iso(plugin.last_run_at),
        "last_success_at": _iso(plugin.last_success_at),
        "last_error_at": _iso(plugin.last_error_at),
        "last_duration_ms": _round(plugin.last_duration_ms),
        "avg_duration_ms": _round(plugin.avg_duration_ms),
        "checked_at": _iso(now),
        "stale": False,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def health_records(
    *, state: str | None = None, enabled: bool | None = None
) -> list[dict[str, Any]]:
    now = timezone.now()
    plugins = plugin_list(state=state, enabled=enabled).only(*_HEALTH_COLUMNS)
    return [health_record(plugin, now=now) for plugin in plugins]


def plugin_runs(*, name: str) -> QuerySet[PluginRun]:
    plugin = plugin_get(name=name)
    return PluginRun.objects.filter(plugin=plugin).order_by("-queued_at", "-id")


# Columns a run list leaves out: they can be large (result up to MiBs, output tails).
_RUN_HEAVY_COLUMNS = ("params", "result", "traceback", "stdout_tail", "stderr_tail")
_MAX_ID = 2**63 - 1


def plugin_run_summaries(*, name: str) -> QuerySet[PluginRun]:
    """The plugin's runs, newest first, without their heavy columns."""
    return plugin_runs(name=name).select_related("plugin").defer(*_RUN_HEAVY_COLUMNS)


def run_get(*, run_id: int) -> PluginRun:
    if not 0 < run_id <= _MAX_ID:  # beyond the id column's range: cannot exist
        raise RunNotFound(run_id)
    try:
        return PluginRun.objects.select_related("plugin").get(pk=run_id)
    except PluginRun.DoesNotExist:
        raise RunNotFound(run_id) from None


# What /metrics reports per plugin, read in one query.
METRIC_COLUMNS = (
    "id",
    "name",
    "state",
    "enabled",
    "success_count",
    "error_count",
    "consecutive_failures",
    "running_count",
)


def plugin_metric_rows() -> list[dict[str, Any]]:
    return list(Plugin.objects.order_by("name").values(*METRIC_COLUMNS))


def run_duration_buckets(
    *, since: datetime, bounds_ms: tuple[float, ...]
) -> dict[int, dict[str, Any]]:
    """Finished runs queued since `since`, by plugin id: cumulative bucket counts, count, sum.

    One aggregate query, bounded by the time window (indexed on queued_at).
    """
    buckets = {
        f"le_{index}": Count("id", filter=Q(duration_ms__lte=bound))
        for index, bound in enumerate(bounds_ms)
    }
    rows = (
        PluginRun.objects.filter(
            queued_at__gte=since,
            status__in=FINISHED_RUN_STATUSES,
            duration_ms__isnull=False,
        )
        .order_by()
        .values("plugin_id")
        .annotate(count=Count("id"), sum_ms=Sum("duration_ms"), **buckets)
    )
    return {
        row["plugin_id"]: {
            "buckets": [row[f"le_{index}"] for index in range(len(bounds_ms))],
            "count": row["count"],
            "sum_ms": row["sum_ms"] or 0.0,
        }
        for row in rows
    }
