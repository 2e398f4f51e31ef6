"""Schedule rows written by the loader (a plugin's declared schedule) and the admin, each
keeping the schedule's next run and its plugin's next_scheduled_at in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from plugins_app.models import Plugin
from plugins_app.schedules import timing
from plugins_app.schedules.models import DECLARED_NAME, Missed, Origin, Overlap, Schedule


def declared_schedule_problem(declared: dict[str, Any]) -> str | None:
    """What the portal refuses in a declared schedule the plugin side shape-checked."""
    if declared.get("cron"):
        problem = timing.cron_problem(str(declared["cron"]))
        return f"schedule['cron']: {problem}" if problem else None
    return None


def refresh_plugin_next_run(plugin_id: int) -> None:
    """Plugin.next_scheduled_at := the earliest next run of its enabled schedules."""
    earliest = Schedule.objects.filter(plugin_id=plugin_id, enabled=True).aggregate(
        earliest=Min("next_run_at")
    )["earliest"]
    Plugin.objects.filter(pk=plugin_id).update(next_scheduled_at=earliest)


def first_run_at(schedule: Schedule, *, now: datetime | None = None) -> datetime | None:
    if not schedule.enabled:
        return None
    return timing.next_after(
        cron=schedule.cron, every_s=schedule.every_s, after=now or timezone.now()
    )


@transaction.atomic
def schedule_save(schedule: Schedule, *, timing_changed: bool) -> Schedule:
    """Save an operator's schedule; a new timing or a re-enabled one starts from now."""
    if timing_changed or not schedule.enabled or schedule.next_run_at is None:
        schedule.next_run_at = first_run_at(schedule)
    schedule.save()
    refresh_plugin_next_run(schedule.plugin_id)
    return schedule


@transaction.atomic
def schedules_delete(schedules: list[Schedule]) -> None:
    plugin_ids = {schedule.plugin_id for schedule in schedules}
    Schedule.objects.filter(pk__in=[schedule.pk for schedule in schedules]).delete()
    for plugin_id in plugin_ids:
        refresh_plugin_next_run(plugin_id)


@transaction.atomic
def sync_declared(*, name: str, declared: dict[str, Any] | None) -> None:
    """Make the plugin's 'declared' schedule what its module declares (none: removed).

    Called in the load's transaction. An unchanged declaration keeps its next run and its
    enabled flag (an operator may have paused it); a changed one starts from now.
    """
    plugin = Plugin.objects.get(name=name)
    existing = Schedule.objects.filter(plugin=plugin, name=DECLARED_NAME).first()
    if declared is None:
        if existing is not None:
            existing.delete()
            refresh_plugin_next_run(plugin.pk)
        return
    wanted = {
        "cron": declared.get("cron") or "",
        "every_s": None if declared.get("cron") else float(declared["every_s"]),
        "params": dict(declared.get("params") or {}),
        "overlap": declared.get("overlap") or Overlap.SKIP,
        "missed": declared.get("missed") or Missed.RUN_ONCE,
    }
    if existing is not None and all(getattr(existing, k) == v for k, v in wanted.items()):
        return
    schedule = existing or Schedule(plugin=plugin, name=DECLARED_NAME, origin=Origin.DECLARED)
    for key, value in wanted.items():
        setattr(schedule, key, value)
    schedule_save(schedule, timing_changed=True)
