"""Reads shared by the API, the admin, the commands and the metrics, so they show one truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from plugins_app.errors import PluginNotFound
from plugins_app.models import Plugin, PluginRun

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
