"""Retries as run rows: a failed run that its plugin's policy retries gets a new QUEUED run,
linked to the first (`retry_of`), numbered (`attempt`) and held back by its backoff
(`not_before`). Called by services.run_finish inside its transaction, plugin row locked.

The database is the authority on what runs when: whichever executor (the thread pool here, a
Celery worker elsewhere) dispatches due runs from the table (`due_run_ids`), and its conditional
claim (services.run_start) lets one process start each. The wake-up after commit is only a hint
so a short backoff need not wait for the next sweep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from plugins_app import reasons_policy
from plugins_app.fleet.queues import route_expression
from plugins_app.models import (
    EventKind,
    Plugin,
    PluginEvent,
    PluginRun,
    PluginState,
    RunStatus,
)
from plugins_app.retry_policy import backoff_s, effective_retry, retry_at, should_retry

SYSTEM_ACTOR = "system"

Waker = Callable[[int, datetime], object]  # (run id, not before): start it then, if you can
_wakers: list[Waker] = []


def add_waker(waker: Waker) -> None:
    """An executor of this process asks to hear of retries queued here (a hint, not a duty)."""
    if waker not in _wakers:
        _wakers.append(waker)


def remove_waker(waker: Waker) -> None:
    if waker in _wakers:
        _wakers.remove(waker)


def policy_of(plugin: Plugin):
    return effective_retry(plugin.retry_declared, plugin.retry_override)


def schedule_retry(
    plugin: Plugin, run: PluginRun, *, outcome: str, status: str, now: datetime
) -> PluginRun | None:
    """Queue the next attempt of a counted failed run when the policy retries it and the
    plugin can still take runs; returns the new run, or None."""
    policy = policy_of(plugin)
    if not should_retry(policy, attempt=run.attempt, outcome=outcome, status=status):
        return None
    if not plugin.enabled or plugin.state == PluginState.UNAVAILABLE:
        return None
    if plugin.quarantined_until is not None:
        return None  # the breaker is open: its probe decides, not a retry
    delay = backoff_s(policy, attempt=run.attempt, jitter=random.random())
    not_before = retry_at(now, delay)
    retry = PluginRun.objects.create(
        plugin=plugin,
        params=run.params,
        actor=run.actor,
        attempt=run.attempt + 1,
        retry_of_id=run.retry_of_id or run.pk,
        not_before=not_before,
        queued_at=now,
    )
    PluginEvent.objects.create(
        plugin=plugin,
        kind=EventKind.RETRY_SCHEDULED,
        reason=reasons_policy.retry_scheduled(
            plugin=plugin.name,
            run_id=run.pk,
            attempt=retry.attempt,
            attempts=policy["max_attempts"],
            at=not_before,
        ),
        actor=SYSTEM_ACTOR,
        run=retry,
        created_at=now,
    )
    refresh_next_retry(plugin)
    transaction.on_commit(lambda: _wake(retry.pk, not_before))
    return retry


def refresh_next_retry(plugin: Plugin) -> None:
    """Keep the plugin's next_retry_at (what its health record shows) true to its queue."""
    waiting = PluginRun.objects.filter(
        plugin=plugin, status=RunStatus.QUEUED, not_before__isnull=False
    )
    earliest = waiting.order_by("not_before").values_list("not_before", flat=True).first()
    Plugin.objects.filter(pk=plugin.pk).update(next_retry_at=earliest)
    plugin.next_retry_at = earliest


def _wake(run_id: int, not_before: datetime) -> None:
    for waker in list(_wakers):
        waker(run_id, not_before)


def due_run_ids(*, now: datetime, queues: list[str] | None = None, limit: int = 100) -> list[int]:
    """Queued runs whose backoff is over, oldest first, and not sent to a queue within the
    stale limit: what a dispatcher should start now. `queues`: only the runs routed to one
    of them (a node's own, so retries waiting for another queue's nodes hide none of them)."""
    due = PluginRun.objects.filter(status=RunStatus.QUEUED, not_before__lte=now).filter(
        _not_sent_since(now)
    )
    if queues is not None:
        due = due.annotate(route=route_expression("plugin__")).filter(route__in=queues)
    return list(due.order_by("not_before", "pk").values_list("pk", flat=True)[:limit])


def claim_send(run_id: int, *, now: datetime) -> bool:
    """Claim the send of a due retry to its queue: True for the one dispatcher that may send
    it now. A send still queued a stale limit later (its message lost) may be claimed again."""
    unsent = PluginRun.objects.filter(pk=run_id, status=RunStatus.QUEUED)
    return bool(unsent.filter(_not_sent_since(now)).update(dispatched_at=now))


def release_send(run_id: int) -> None:
    """The broker refused the claimed send: the next dispatcher's heartbeat sends it."""
    PluginRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(dispatched_at=None)


def _not_sent_since(now: datetime) -> Q:
    resend_before = now - timedelta(seconds=settings.PORTAL_RUN_STALE_AFTER_S)
    return Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=resend_before)


def not_waiting(now: datetime) -> Q:
    """Queued runs that may start now (no backoff, or it is over)."""
    return Q(not_before__isnull=True) | Q(not_before__lte=now)
