"""The scheduler's tick: act on every due occurrence exactly once, whatever the number of
schedulers running, and queue runs through the same submit path as any other run.

Exactly once: each occurrence is decided in one transaction that locks the schedule row
(PostgreSQL: SELECT ... FOR UPDATE; SQLite: BEGIN IMMEDIATE takes the write lock), re-reads
its next_run_at, writes a ScheduleFiring (unique per schedule and occurrence) and moves
next_run_at on. A second scheduler waits for the lock, then finds the occurrence taken.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from plugins_app import reasons_schedules
from plugins_app.errors import InvalidParams, PluginNotFound, PluginRefused
from plugins_app.executor import worker_id
from plugins_app.models import PluginRun, RunStatus
from plugins_app.runner import submit_run
from plugins_app.schedules import timing
from plugins_app.schedules.models import FiringOutcome, Missed, Overlap, Schedule, ScheduleFiring
from plugins_app.schedules.writes import refresh_plugin_next_run

logger = logging.getLogger(__name__)

GOING = (RunStatus.QUEUED, RunStatus.RUNNING)
Decision = tuple[str, PluginRun | None, str]  # (FiringOutcome, the run queued, note)


def fire_due(*, now: datetime | None = None) -> list[ScheduleFiring]:
    """Act on every due occurrence and every deferred one whose blocking run ended."""
    now = now or timezone.now()
    due_ids = list(
        Schedule.objects.filter(enabled=True, next_run_at__lte=now)
        .order_by("next_run_at")
        .values_list("pk", flat=True)
    )
    firings = [firing for pk in due_ids if (firing := _fire_one(pk, now)) is not None]
    deferred = ScheduleFiring.objects.filter(outcome=FiringOutcome.DEFERRED)
    for firing_id in list(deferred.values_list("pk", flat=True)):
        released = _release_deferred(firing_id)
        if released is not None:
            firings.append(released)
    return firings


def _fire_one(schedule_id: int, now: datetime) -> ScheduleFiring | None:
    try:
        with transaction.atomic():
            return _decide(schedule_id, now)
    except IntegrityError:
        # The unique (schedule, occurrence) pair: another scheduler recorded it first.
        logger.info("Schedule %s: occurrence already taken by another scheduler", schedule_id)
        return None


def _decide(schedule_id: int, now: datetime) -> ScheduleFiring | None:
    schedule = (
        Schedule.objects.select_for_update().select_related("plugin").filter(pk=schedule_id).first()
    )
    if schedule is None or not schedule.enabled:
        return None
    if schedule.next_run_at is None or schedule.next_run_at > now:
        return None  # another scheduler took it while this one waited for the lock
    due = timing.due(
        cron=schedule.cron, every_s=schedule.every_s, next_run_at=schedule.next_run_at, now=now
    )
    late_s = (now - due.first).total_seconds()
    missed = due.count > 1 or late_s > settings.PORTAL_SCHEDULER_GRACE_S
    if missed and schedule.missed == Missed.SKIP:
        decision: Decision = (FiringOutcome.MISSED, None, _missed_note(schedule, due, ran=False))
    else:
        decision = _overlap_or_submit(schedule)
        if missed and decision[0] == FiringOutcome.FIRED:
            decision = (decision[0], decision[1], _missed_note(schedule, due, ran=True))
    outcome, run, note = decision
    firing = ScheduleFiring.objects.create(
        schedule=schedule,
        occurrence=due.latest,
        outcome=outcome,
        run=run,
        note=note,
        fired_by=worker_id(),
    )
    schedule.next_run_at = due.following
    schedule.last_occurrence_at = due.latest
    _record_on_schedule(schedule, outcome, run, note)
    refresh_plugin_next_run(schedule.plugin_id)
    return firing


def _missed_note(schedule: Schedule, due: timing.Due, *, ran: bool) -> str:
    return reasons_schedules.schedule_missed(
        plugin=schedule.plugin.name,
        schedule=schedule.name,
        missed=due.count,
        since=due.first,
        ran=ran,
    )


def _going_run(schedule: Schedule) -> PluginRun | None:
    firing = (
        ScheduleFiring.objects.filter(schedule=schedule, run__status__in=GOING)
        .select_related("run")
        .order_by("-occurrence")
        .first()
    )
    return firing.run if firing is not None else None


def _overlap_or_submit(schedule: Schedule) -> Decision:
    going = _going_run(schedule) if schedule.overlap != Overlap.ALLOW else None
    if going is None:
        return _submit(schedule)
    plugin = schedule.plugin.name
    waiting = ScheduleFiring.objects.filter(schedule=schedule, outcome=FiringOutcome.DEFERRED)
    if schedule.overlap == Overlap.QUEUE_ONE and not waiting.exists():
        note = reasons_schedules.schedule_deferred(
            plugin=plugin, schedule=schedule.name, run_id=going.pk
        )
        return FiringOutcome.DEFERRED, None, note
    note = reasons_schedules.schedule_overlap_skipped(
        plugin=plugin, schedule=schedule.name, run_id=going.pk
    )
    return FiringOutcome.SKIPPED, None, note


def _submit(schedule: Schedule) -> Decision:
    """Queue the run as any caller would; a refusal is recorded here, never counted."""
    try:
        with transaction.atomic():
            run = submit_run(
                name=schedule.plugin.name,
                params=dict(schedule.params),
                actor=f"schedule:{schedule.name}",
            )
    except (PluginRefused, InvalidParams, PluginNotFound) as exc:
        note = reasons_schedules.schedule_refused(
            plugin=schedule.plugin.name, schedule=schedule.name, refusal=str(exc)
        )
        return FiringOutcome.REFUSED, None, note
    return FiringOutcome.FIRED, run, ""


def _record_on_schedule(schedule: Schedule, outcome: str, run: PluginRun | None, note: str) -> None:
    schedule.last_outcome = outcome
    schedule.last_note = note
    if run is not None:
        schedule.last_run = run
    schedule.save(
        update_fields=[
            "next_run_at",
            "last_occurrence_at",
            "last_outcome",
            "last_note",
            "last_run",
        ]
    )


def _release_deferred(firing_id: int) -> ScheduleFiring | None:
    """Queue a deferred occurrence once the run it waited for ended."""
    with transaction.atomic():
        schedule_id = (
            ScheduleFiring.objects.filter(pk=firing_id)
            .values_list("schedule_id", flat=True)
            .first()
        )
        if schedule_id is None:
            return None
        schedule = Schedule.objects.select_for_update().select_related("plugin").get(pk=schedule_id)
        firing = ScheduleFiring.objects.filter(pk=firing_id, outcome=FiringOutcome.DEFERRED).first()
        if firing is None or _going_run(schedule) is not None:
            return None
        outcome, run, note = (
            _submit(schedule)
            if schedule.enabled
            else (
                FiringOutcome.SKIPPED,
                None,
                reasons_schedules.schedule_disabled(
                    plugin=schedule.plugin.name, schedule=schedule.name
                ),
            )
        )
        ScheduleFiring.objects.filter(pk=firing.pk).update(outcome=outcome, run=run, note=note)
        _record_on_schedule(schedule, outcome, run, note)
        firing.refresh_from_db()
        return firing
