"""Reads shared by the API, the admin, the commands and the metrics, so they show one truth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Case, Count, Func, IntegerField, Q, QuerySet, Value, When
from django.db.models.functions import Substr, TruncHour
from django.utils import timezone

from plugins_app.errors import PluginNotFound
from plugins_app.models import Plugin, PluginRun, PluginState, RunStatus

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


# Broken plugins: what an operator must look at first.
PROBLEM_STATES = (PluginState.FAILED, PluginState.UNAVAILABLE)
FAILED_RUN_STATUSES = (
    RunStatus.FAILED,
    RunStatus.TIMED_OUT,
    RunStatus.CRASHED,
    RunStatus.INTERRUPTED,
)


def plugin_problems_q() -> Q:
    """FAILED, UNAVAILABLE or disabled: the plugins that need an operator."""
    return Q(state__in=PROBLEM_STATES) | Q(enabled=False)


def plugin_list_problems_first() -> QuerySet[Plugin]:
    """Every plugin, annotated with `problem_rank`: FAILED, UNAVAILABLE, disabled, then the rest."""
    rank = Case(
        When(state=PluginState.FAILED, then=Value(0)),
        When(state=PluginState.UNAVAILABLE, then=Value(1)),
        When(enabled=False, then=Value(2)),
        default=Value(3),
        output_field=IntegerField(),
    )
    return Plugin.objects.annotate(problem_rank=rank).order_by("problem_rank", "name")


@dataclass(frozen=True)
class FleetOverview:
    total: int
    by_state: dict[str, int]
    disabled: int
    problems: list[Plugin]
    problem_count: int


def fleet_overview(*, problem_limit: int = 20) -> FleetOverview:
    """Counts per state, disabled plugins, and the broken ones with their reasons (capped)."""
    by_state = {state.value: 0 for state in PluginState}
    disabled = 0
    # One GROUP BY over the (enabled, state) index instead of a query per state.
    for row in Plugin.objects.values("state", "enabled").annotate(n=Count("id")).order_by():
        by_state[row["state"]] = by_state.get(row["state"], 0) + row["n"]
        disabled += 0 if row["enabled"] else row["n"]
    broken = Plugin.objects.filter(state__in=PROBLEM_STATES).order_by("-state_changed_at", "name")
    problems = list(
        broken.only("name", "state", "reason", "enabled", "state_changed_at")[:problem_limit]
    )
    problem_count = sum(by_state[state] for state in PROBLEM_STATES)
    return FleetOverview(
        total=sum(by_state.values()),
        by_state=by_state,
        disabled=disabled,
        problems=problems,
        problem_count=problem_count,
    )


@dataclass(frozen=True)
class HourBucket:
    start: datetime
    total: int
    failed: int


def runs_per_hour(*, hours: int = 24, now: datetime | None = None) -> list[HourBucket]:
    """Runs queued in each of the last `hours` hours (the current one last), failures apart.

    One GROUP BY over the indexed queued_at range, so a busy day of runs stays cheap.
    """
    now = now or timezone.now()
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = current - timedelta(hours=hours - 1)
    rows = (
        PluginRun.objects.filter(queued_at__gte=first, queued_at__lt=current + timedelta(hours=1))
        .annotate(hour=_utc_hour())
        .values("hour")
        .annotate(total=Count("id"), failed=Count("id", filter=Q(status__in=FAILED_RUN_STATUSES)))
        .order_by()
    )
    counts = {_as_utc_hour(row["hour"]): (row["total"], row["failed"]) for row in rows}
    starts = [first + timedelta(hours=i) for i in range(hours)]
    return [HourBucket(start, *counts.get(start, (0, 0))) for start in starts]


def _utc_hour() -> Func:
    """The UTC hour of queued_at, computed by the database itself.

    SQLite stores datetimes as UTC text and runs Django's Trunc* as a Python function per row
    (seconds on a busy day), so there the hour is the text prefix 'YYYY-MM-DD HH'.
    """
    if connection.vendor == "sqlite":
        return Substr("queued_at", 1, 13)
    return TruncHour("queued_at", tzinfo=UTC)


def _as_utc_hour(value: datetime | str) -> datetime:
    if isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%d %H").replace(tzinfo=UTC)
    return value.astimezone(UTC)


def plugin_last_run_params(*, name: str) -> dict[str, Any]:
    """The params of the plugin's newest run (what a rerun repeats), or {} if it never ran."""
    params = (
        PluginRun.objects.filter(plugin__name=name)
        .order_by("-queued_at", "-id")
        .values_list("params", flat=True)
        .first()
    )
    return params if isinstance(params, dict) else {}
