"""When a schedule's occurrences fall: a cron expression (croniter, in UTC) or an interval."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

MAX_COUNTED_OCCURRENCES = 10_000  # past this, "missed many" is all an operator needs to read
MIN_INTERVAL_S = 1.0

_BAD_CRON = (CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, ValueError)


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a five-field cron expression croniter can follow, or None."""
    fields = expression.split()
    if len(fields) != 5:
        return (
            f"'{expression}' has {len(fields)} field(s), not the 5 of a cron expression "
            "(minute hour day month weekday, e.g. '*/15 * * * *')"
        )
    if not croniter.is_valid(expression):
        return (
            f"'{expression}' is not a valid cron expression (minute 0-59, hour 0-23, day 1-31, "
            "month 1-12, weekday 0-6; e.g. '0 3 * * 1-5' is 03:00 UTC on weekdays)"
        )
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except _BAD_CRON as exc:
        return f"'{expression}' never occurs ({exc}); check its day and month fields"
    return None


def interval_problem(every_s: float) -> str | None:
    if not every_s >= MIN_INTERVAL_S:
        return f"an interval must be at least {MIN_INTERVAL_S:g} second, not {every_s:g}"
    return None


def next_after(*, cron: str, every_s: float | None, after: datetime) -> datetime:
    """The first occurrence strictly after `after` (an interval counts from `after`)."""
    if cron:
        return croniter(cron, after.astimezone(UTC)).get_next(datetime)
    assert every_s is not None
    return after + timedelta(seconds=every_s)


@dataclass(frozen=True)
class Due:
    """The occurrences from a schedule's next_run_at up to now."""

    count: int  # how many fell due (at least 1)
    first: datetime
    latest: datetime
    following: datetime  # the first occurrence after now: the next next_run_at


def due(*, cron: str, every_s: float | None, next_run_at: datetime, now: datetime) -> Due:
    """Every occurrence at or before `now`, counted from `next_run_at` (which is due)."""
    if not cron:
        assert every_s is not None
        step = timedelta(seconds=every_s)
        count = int((now - next_run_at) / step) + 1
        latest = next_run_at + step * (count - 1)
        return Due(count, next_run_at, latest, latest + step)
    walker = croniter(cron, next_run_at.astimezone(UTC))
    count, latest = 1, next_run_at
    following = walker.get_next(datetime)
    while following <= now and count < MAX_COUNTED_OCCURRENCES:
        count, latest = count + 1, following
        following = walker.get_next(datetime)
    if following <= now:  # more than we count: jump to the first after now
        following = croniter(cron, now.astimezone(UTC)).get_next(datetime)
    return Due(count, next_run_at, latest, following)
