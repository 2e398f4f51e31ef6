"""Reads shared by the API, the admin, the commands and the metrics, so they show one truth."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import (
    Case,
    Count,
    Func,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Substr, TruncHour
from django.utils import timezone

from plugins_app import fingerprints
from plugins_app.errors import InvalidName, PluginNotFound, RunNotFound
from plugins_app.models import (
    AVAILABLE_STATES,
    DURATION_BUCKETS,
    Plugin,
    PluginRun,
    PluginState,
    RunStatus,
    RunTally,
)
from plugins_app.retry_policy import effective_quarantine_after, effective_retry, quarantine_state
from plugins_app.storable import name_problem

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
    "params_schema",
    "retry_policy",
    "quarantine_after",
    "next_retry_at",
    "quarantine",
    "next_scheduled_at",
    "checked_at",
    "stale",
    "stale_since",
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
    "params_schema",
    "retry_declared",
    "retry_override",
    "quarantine_after_declared",
    "quarantine_after_override",
    "next_retry_at",
    "quarantined_until",
    "quarantine_reason",
    "next_scheduled_at",
)


def plugin_list(*, state: str | None = None, enabled: bool | None = None) -> QuerySet[Plugin]:
    plugins = Plugin.objects.all().order_by("name")
    if state:
        plugins = plugins.filter(state=state)
    if enabled is not None:
        plugins = plugins.filter(enabled=enabled)
    return plugins


def checked_name(name: str) -> str:
    """The name, or InvalidName (a 404) when no plugin can have it: it is never queried."""
    problem = name_problem(name)
    if problem:
        raise InvalidName(name, problem)
    return name


def plugin_get(*, name: str) -> Plugin:
    checked_name(name)
    try:
        return Plugin.objects.get(name=name)
    except Plugin.DoesNotExist:
        raise PluginNotFound(name) from None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def health_record(plugin: Plugin, *, now: datetime | None = None) -> dict[str, Any]:
    """One plugin's health: every key always present, null where unknown."""
    return _health({column: getattr(plugin, column) for column in _HEALTH_COLUMNS}, now)


def health_record_by_name(*, name: str) -> dict[str, Any]:
    """One plugin's health, read with only the columns it needs (the API's hot path)."""
    checked_name(name)
    database = connections[DEFAULT_DB_ALIAS]  # this thread's connection
    sql, compiler, converters = _compiled_health_query(database)
    with database.cursor() as cursor:
        cursor.execute(sql, [name])
        row = cursor.fetchone()
    if row is None:
        raise PluginNotFound(name)
    if converters:
        row = next(iter(compiler.apply_converters([row], converters)))
    return _health(dict(zip(_HEALTH_COLUMNS, row, strict=True)), None)


# Compiling the ORM query costs more than running it (docs/api.md measures what this gained),
# and load balancers poll one plugin's health all the time: its SQL and value converters are
# built once per connection.
_compiled_health_queries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_NAME_PLACEHOLDER = "\x00plugin name\x00"


def _compiled_health_query(database) -> tuple[str, Any, list]:
    compiled = _compiled_health_queries.get(database)
    if compiled is None:
        query = Plugin.objects.filter(name=_NAME_PLACEHOLDER).values(*_HEALTH_COLUMNS).query
        compiler = query.get_compiler(connection=database)
        sql, params = compiler.as_sql()
        if tuple(params) != (_NAME_PLACEHOLDER,):
            raise RuntimeError(f"Unexpected parameters in the health query: {params!r}")
        converters = compiler.get_converters([column for column, _, _ in compiler.select])
        compiled = _compiled_health_queries[database] = (sql, compiler, converters)
    return compiled


def _health(row: dict[str, Any], now: datetime | None) -> dict[str, Any]:
    """The health record from a plugin's columns (a model's or a `.values()` row)."""
    now = now or timezone.now()
    since = row["available_since"]
    # Plugin.uptime_seconds's rule, on plain rows too (no model instances for a list of 1,000).
    uptime = (
        max(0.0, (now - since).total_seconds())
        if row["state"] in AVAILABLE_STATES and since is not None
        else None
    )
    return {
        "name": row["name"],
        "state": row["state"],
        "description": row["description"] or None,
        "reason": row["reason"] or None,
        "version": row["version"] or None,
        "uptime_seconds": _round(uptime),
        "success_count": row["success_count"],
        "error_count": row["error_count"],
        "enabled": row["enabled"],
        "consecutive_failures": row["consecutive_failures"],
        "last_run_at": _iso(row["last_run_at"]),
        "last_success_at": _iso(row["last_success_at"]),
        "last_error_at": _iso(row["last_error_at"]),
        "last_duration_ms": _round(row["last_duration_ms"]),
        "avg_duration_ms": _round(row["avg_duration_ms"]),
        "params_schema": row["params_schema"],
        "retry_policy": effective_retry(row["retry_declared"], row["retry_override"]),
        "quarantine_after": effective_quarantine_after(
            row["quarantine_after_declared"], row["quarantine_after_override"]
        ),
        "next_retry_at": _iso(row["next_retry_at"]),
        "quarantine": {
            "state": quarantine_state(until=row["quarantined_until"], now=now),
            "reason": row["quarantine_reason"] or None,
            "until": _iso(row["quarantined_until"]),
        },
        "next_scheduled_at": _iso(row["next_scheduled_at"]),
        "checked_at": _iso(now),
        "stale": False,
        "stale_since": None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def health_records(
    *, state: str | None = None, enabled: bool | None = None
) -> list[dict[str, Any]]:
    """Every matching plugin's health in one query; plain rows, no model instances (speed)."""
    now = timezone.now()
    rows = plugin_list(state=state, enabled=enabled).values(*_HEALTH_COLUMNS)
    return [_health(row, now) for row in rows]


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
    "quarantined_until",
)


def plugin_metric_rows() -> list[dict[str, Any]]:
    return list(Plugin.objects.order_by("name").values(*METRIC_COLUMNS))


def run_tally_rows() -> list[dict[str, Any]]:
    """Every plugin's cumulative run tallies, one row per outcome (see plugins_app.run_tallies)."""
    columns = ("plugin_id", "outcome", "runs", "timed_runs", "duration_s")
    buckets = tuple(column for column, _ in DURATION_BUCKETS)
    return list(RunTally.objects.order_by().values(*columns, *buckets))


def queued_run_counts() -> dict[int, int]:
    """Runs waiting to start, by plugin id (one GROUP BY over the run status index)."""
    rows = (
        PluginRun.objects.filter(status=RunStatus.QUEUED)
        .order_by()
        .values("plugin_id")
        .annotate(queued=Count("id"))
    )
    return {row["plugin_id"]: row["queued"] for row in rows}


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
    """The params of the plugin's newest run (what a rerun repeats), or {} if it never ran.

    Refused runs (closed uncounted: disabled, UNAVAILABLE) never ran and are skipped.
    """
    params = (
        PluginRun.objects.filter(plugin__name=name)
        .exclude(outcome="refused")
        .order_by("-queued_at", "-id")
        .values_list("params", flat=True)
        .first()
    )
    return params if isinstance(params, dict) else {}


def failed_runs_of(plugin: Any) -> QuerySet[PluginRun]:
    """A plugin's failed runs, newest first; refused runs (never ran, not counted) left out.

    `plugin` is a plugin's id, or an OuterRef to one in a subquery.
    """
    return (
        PluginRun.objects.filter(plugin_id=plugin, status__in=FAILED_RUN_STATUSES)
        .exclude(outcome="refused")
        .order_by("-queued_at", "-id")
    )


def plugin_latest_failed_run(*, plugin_id: int) -> PluginRun | None:
    """The plugin's newest failed run (what the plugin page links to), or None."""
    return failed_runs_of(plugin_id).first()


def with_latest_failure(queryset: QuerySet[Plugin]) -> QuerySet[Plugin]:
    """Annotate each plugin whose last run failed with that run's id and reason (None
    otherwise): a plugin reloaded after a failure still shows what last went wrong."""
    latest = failed_runs_of(OuterRef("pk"))[:1]
    # Only where the last run failed: a healthy fleet's page reads no run at all.
    failing = Q(consecutive_failures__gt=0)
    return queryset.annotate(
        latest_failed_run_id=Case(When(failing, then=Subquery(latest.values("pk")))),
        latest_failed_reason=Case(When(failing, then=Subquery(latest.values("reason")))),
    )


def environment_changes(run: PluginRun) -> list[str]:
    """What differs in a run's environment from the plugin's last successful run before it
    (with a fingerprint); [] when there is none, or when either has no fingerprint."""
    if not run.environment:
        return []
    before = (
        PluginRun.objects.filter(plugin_id=run.plugin_id, status=RunStatus.SUCCEEDED, pk__lt=run.pk)
        .exclude(environment={})
        .order_by("-pk")
        .values_list("environment", flat=True)
        .first()
    )
    return fingerprints.changes_between(before, run.environment) if before else []
