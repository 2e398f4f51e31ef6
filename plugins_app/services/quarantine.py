"""Automatic quarantine, a circuit breaker per plugin, as steps of the run services'
transactions (services/runs.py calls them with the plugin row locked).

closed ──quarantine_after consecutive failures──► open (runs refused until `quarantined_until`)
open ──cooldown over, a run starts──► half-open (that run is the probe; others are refused)
half-open ──probe succeeds──► closed    half-open ──probe fails──► open, cooldown doubled (capped)

Every step writes an event. The state lives in the plugin row only, so every process and
machine sees the same breaker.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

from plugins_app import reasons_policy
from plugins_app.models import EventKind, Plugin, PluginEvent, PluginRun, RunStatus
from plugins_app.notifications.events import QUARANTINED
from plugins_app.notifications.outbox import record_event
from plugins_app.retry_policy import (
    effective_quarantine_after,
    next_cooldown_s,
    probe_allowed,
    should_quarantine,
)

SYSTEM_ACTOR = "system"
LAST_FAILURE_CHARS = 300  # of the latest failure's reason, quoted in the quarantine's reason


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def threshold(plugin: Plugin) -> int:
    return effective_quarantine_after(
        plugin.quarantine_after_declared, plugin.quarantine_after_override
    )


def probe_active(plugin: Plugin) -> bool:
    """The probe run let through is still queued or running."""
    probe_id = plugin.quarantine_probe_run_id
    if probe_id is None:
        return False
    active = (RunStatus.QUEUED, RunStatus.RUNNING)
    return PluginRun.objects.filter(pk=probe_id, status__in=active).exists()


def refusal(plugin: Plugin, *, now: datetime) -> str | None:
    """Why a run of the quarantined plugin is refused now; None when it may go (the plugin is
    not quarantined, or its cooldown is over and no probe is going)."""
    until = plugin.quarantined_until
    if until is None:
        return None
    if now < until:
        return plugin.quarantine_reason
    if probe_active(plugin):
        run_id = plugin.quarantine_probe_run_id or 0
        return reasons_policy.quarantine_probe_busy(plugin=plugin.name, run_id=run_id)
    return None


def claim_probe(plugin: Plugin, run: PluginRun, *, now: datetime) -> None:
    """`run` starts while the plugin is half-open: it becomes the one probe (run_start checked
    `refusal` first, under the same lock)."""
    active = probe_active(plugin)
    if not probe_allowed(until=plugin.quarantined_until, probe_active=active, now=now):
        return
    Plugin.objects.filter(pk=plugin.pk).update(quarantine_probe_run=run)
    plugin.quarantine_probe_run_id = run.pk
    _event(
        plugin,
        EventKind.QUARANTINE_PROBE,
        reasons_policy.quarantine_probe_started(plugin=plugin.name, run_id=run.pk),
        run=run,
        now=now,
    )


def after_finish(
    plugin: Plugin, run: PluginRun, *, succeeded: bool, failure: str, now: datetime
) -> None:
    """A counted run ended (plugin row refreshed after its counters moved): close the breaker
    after a successful probe, reopen it after a failed one, or open it at the threshold."""
    if plugin.quarantined_until is not None:
        if plugin.quarantine_probe_run_id != run.pk:
            return  # a run that started before the quarantine: only the probe decides
        if succeeded:
            lift(plugin, actor=SYSTEM_ACTOR, reason=_probe_passed(plugin, run), run=run, now=now)
        else:
            _open(plugin, run=run, failure=failure, now=now, previous=plugin.quarantine_cooldown_s)
        return
    if not succeeded and should_quarantine(
        consecutive_failures=plugin.consecutive_failures, threshold=threshold(plugin)
    ):
        _open(plugin, run=run, failure=failure, now=now, previous=None)


def _probe_passed(plugin: Plugin, run: PluginRun) -> str:
    return reasons_policy.quarantine_lifted(
        plugin=plugin.name, by=f"its probe run {run.pk}, which succeeded", note=""
    )


def _open(
    plugin: Plugin, *, run: PluginRun, failure: str, now: datetime, previous: float | None
) -> None:
    cooldown = next_cooldown_s(
        previous,
        first=settings.PORTAL_QUARANTINE_COOLDOWN_S,
        cap=settings.PORTAL_QUARANTINE_MAX_COOLDOWN_S,
    )
    until = now + timedelta(seconds=cooldown)
    reason = reasons_policy.plugin_quarantined(
        plugin=plugin.name,
        failures=plugin.consecutive_failures,
        last_failure=shorten(failure, LAST_FAILURE_CHARS),
        until=until,
        cooldown_s=cooldown,
    )
    Plugin.objects.filter(pk=plugin.pk).update(
        quarantined_at=now,
        quarantined_until=until,
        quarantine_reason=reason,
        quarantine_cooldown_s=cooldown,
        quarantine_probe_run=None,
        updated_at=now,
    )
    _event(plugin, EventKind.QUARANTINED, reason, run=run, now=now)
    plugin.refresh_from_db()
    record_event(plugin, kind=QUARANTINED, reason=reason, actor=SYSTEM_ACTOR, run_id=run.pk)


def lift(
    plugin: Plugin, *, actor: str, reason: str, run: PluginRun | None = None, now: datetime
) -> None:
    """Close the breaker: runs go again, the next quarantine starts from the first cooldown."""
    Plugin.objects.filter(pk=plugin.pk).update(
        quarantined_at=None,
        quarantined_until=None,
        quarantine_reason="",
        quarantine_cooldown_s=None,
        quarantine_probe_run=None,
        updated_at=now,
    )
    _event(plugin, EventKind.QUARANTINE_LIFTED, reason, run=run, now=now, actor=actor)
    plugin.refresh_from_db()


def extend(plugin: Plugin, *, until: datetime, actor: str, reason: str, now: datetime) -> None:
    """Keep the breaker open until `until`; a probe let through already may still finish."""
    Plugin.objects.filter(pk=plugin.pk).update(
        quarantined_until=until, quarantine_probe_run=None, updated_at=now
    )
    _event(plugin, EventKind.QUARANTINE_EXTENDED, reason, run=None, now=now, actor=actor)
    plugin.refresh_from_db()


def _event(
    plugin: Plugin,
    kind: EventKind,
    reason: str,
    *,
    run: PluginRun | None,
    now: datetime,
    actor: str = SYSTEM_ACTOR,
) -> None:
    PluginEvent.objects.create(
        plugin=plugin, kind=kind, reason=reason, actor=actor, run=run, created_at=now
    )
