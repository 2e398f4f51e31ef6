"""The only code that changes the registry.

Each service opens one transaction, locks the plugin row, checks the transition table, updates
counters with F() expressions in the database and appends the history row, so concurrent
threads and processes neither lose nor double-count an outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from plugins_app import reasons
from plugins_app.errors import (
    IllegalTransition,
    PluginNotFound,
    PluginRefused,
    RunNotFound,
)
from plugins_app.models import (
    AVAILABLE_STATES,
    FINISHED_RUN_STATUSES,
    EventKind,
    Plugin,
    PluginEvent,
    PluginRun,
    PluginState,
    RunOutcomeKind,
    RunStatus,
)
from plugins_app.sources import PluginSource
from plugins_app.transitions import check_transition

SYSTEM_ACTOR = "system"


@dataclass(frozen=True)
class PluginMetadata:
    """What a load found out about a plugin module."""

    source: PluginSource = field(default_factory=PluginSource)
    description: str = ""
    version: str = ""
    requirements: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, in the registry's terms (the pipeline maps sandbox results onto it)."""

    status: RunStatus
    outcome: str = ""
    result: Any = None
    result_truncated: bool = False
    error_type: str = ""
    reason: str = ""
    traceback: str = ""
    exit_code: int | None = None
    signal: str = ""
    peak_rss_kb: int | None = None
    duration_ms: float | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.status == RunStatus.SUCCEEDED


def _locked_plugin(name: str) -> Plugin:
    try:
        return Plugin.objects.select_for_update().get(name=name)
    except Plugin.DoesNotExist:
        raise PluginNotFound(name) from None


def _transition(
    plugin: Plugin,
    to_state: PluginState,
    *,
    reason: str,
    actor: str,
    run: PluginRun | None = None,
    always_record: bool = False,
    extra_fields: dict[str, Any] | None = None,
) -> None:
    """Move a locked plugin to `to_state`, writing the event row when the state changes.

    `always_record` keeps a re-check that lands in the same state (a reload that fails again)
    in the history with its new reason.
    """
    from_state = plugin.state
    check_transition(plugin.name, from_state, to_state)
    now = timezone.now()
    fields: dict[str, Any] = {"reason": reason, **(extra_fields or {})}
    changed = from_state != to_state
    if changed:
        fields["state"] = to_state
        fields["state_changed_at"] = now
        was_available = from_state in AVAILABLE_STATES
        if to_state in AVAILABLE_STATES and not was_available:
            fields["available_since"] = now
        elif to_state not in AVAILABLE_STATES:
            fields["available_since"] = None
    Plugin.objects.filter(pk=plugin.pk).update(**fields, updated_at=now)
    if changed or always_record:
        PluginEvent.objects.create(
            plugin=plugin,
            kind=EventKind.STATE_CHANGED,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            actor=actor,
            run=run,
            created_at=now,
        )
    plugin.refresh_from_db()


@transaction.atomic
def plugin_register(*, name: str, metadata: PluginMetadata, actor: str) -> Plugin:
    """Record that a plugin's module imported: new plugins appear, known ones go to LOADED."""
    fields = _metadata_fields(metadata)
    plugin = Plugin.objects.select_for_update().filter(name=name).first()
    if plugin is None:
        return _plugin_create(name=name, state=PluginState.LOADED, reason="", actor=actor, **fields)
    if plugin.running_count:
        raise IllegalTransition(
            reasons.reload_while_running(plugin=name, running=plugin.running_count)
        )
    _transition(plugin, PluginState.LOADED, reason="", actor=actor, extra_fields=fields)
    return plugin


def _plugin_create(*, name: str, state: PluginState, reason: str, actor: str, **fields) -> Plugin:
    check_transition(name, None, state)
    now = timezone.now()
    plugin = Plugin(
        name=name,
        state=state,
        reason=reason,
        state_changed_at=now,
        available_since=now if state in AVAILABLE_STATES else None,
        **fields,
    )
    plugin.full_clean()
    plugin.save()
    PluginEvent.objects.create(
        plugin=plugin, from_state="", to_state=state, reason=reason, actor=actor, created_at=now
    )
    return plugin


@transaction.atomic
def plugin_mark_initialized(*, name: str, actor: str) -> Plugin:
    """setup() succeeded (or there is none): the plugin is ready for runs."""
    plugin = _locked_plugin(name)
    _transition(plugin, PluginState.INITIALIZED, reason="", actor=actor)
    return plugin


@transaction.atomic
def plugin_mark_failed(
    *,
    name: str,
    reason: str,
    actor: str,
    source: PluginSource | None = None,
    metadata: PluginMetadata | None = None,
) -> Plugin:
    """A load broke (import error, failing setup, crash, hang): transient, FAILED.

    `metadata` records what the plugin declared when its module imported before it broke.
    """
    return _mark_broken(
        name, PluginState.FAILED, reason=reason, actor=actor, source=source, metadata=metadata
    )


@transaction.atomic
def plugin_mark_unavailable(
    *,
    name: str,
    reason: str,
    actor: str,
    source: PluginSource | None = None,
    metadata: PluginMetadata | None = None,
) -> Plugin:
    """The environment lacks something the plugin needs: UNAVAILABLE until a reload."""
    return _mark_broken(
        name, PluginState.UNAVAILABLE, reason=reason, actor=actor, source=source, metadata=metadata
    )


def _metadata_fields(metadata: PluginMetadata) -> dict[str, Any]:
    return {
        **metadata.source.fields(),
        "description": metadata.description,
        "version": metadata.version,
        "requirements": metadata.requirements or {},
        "limits": metadata.limits or {},
    }


def _mark_broken(
    name: str,
    state: PluginState,
    *,
    reason: str,
    actor: str,
    source: PluginSource | None,
    metadata: PluginMetadata | None = None,
) -> Plugin:
    plugin = Plugin.objects.select_for_update().filter(name=name).first()
    extra = _metadata_fields(metadata) if metadata is not None else {}
    if source is not None:
        extra.update(source.fields())
    if plugin is None:
        return _plugin_create(name=name, state=state, reason=reason, actor=actor, **extra)
    if plugin.running_count:
        raise IllegalTransition(
            reasons.reload_while_running(plugin=name, running=plugin.running_count)
        )
    _transition(plugin, state, reason=reason, actor=actor, always_record=True, extra_fields=extra)
    return plugin


def _refusal(plugin: Plugin) -> str | None:
    if not plugin.enabled:
        return reasons.plugin_disabled(
            plugin=plugin.name, by=plugin.disabled_by, note=plugin.disabled_note
        )
    if plugin.state == PluginState.UNAVAILABLE:
        return reasons.plugin_unavailable_refusal(plugin=plugin.name, reason=plugin.reason)
    return None


@transaction.atomic
def run_queue(*, name: str, params: dict[str, Any], actor: str) -> PluginRun:
    """Create a queued run, or refuse (disabled, UNAVAILABLE) without counting anything."""
    plugin = _locked_plugin(name)
    refusal = _refusal(plugin)
    if refusal:
        raise PluginRefused(refusal)
    return PluginRun.objects.create(plugin=plugin, params=params, actor=actor)


@transaction.atomic
def run_start(*, run_id: int, worker: str) -> PluginRun:
    """A worker picked the run up: the run and the plugin become RUNNING.

    Returns the run; its status is FAILED instead of RUNNING when the plugin was disabled or
    became UNAVAILABLE while the run waited, and then nothing is counted.
    """
    run = _locked_run(run_id)
    plugin = _locked_plugin(run.plugin.name)
    if run.status != RunStatus.QUEUED:
        raise IllegalTransition(
            f"Run {run_id} of plugin '{plugin.name}' is {run.status}, not queued, and cannot "
            "start again (queue a new run instead)"
        )
    now = timezone.now()
    refusal = _refusal(plugin)
    if refusal:
        # Disabled or made UNAVAILABLE while queued: close the run, count nothing.
        PluginRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED, outcome=RunOutcomeKind.REFUSED, reason=refusal, finished_at=now
        )
        run.refresh_from_db()
        return run
    PluginRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, started_at=now, heartbeat_at=now, worker=worker
    )
    _transition(
        plugin,
        PluginState.RUNNING,
        reason="",
        actor=run.actor,
        run=run,
        extra_fields={"running_count": F("running_count") + 1, "last_run_at": now},
    )
    run.refresh_from_db()
    return run


def _locked_run(run_id: int) -> PluginRun:
    try:
        return PluginRun.objects.select_for_update().select_related("plugin").get(pk=run_id)
    except PluginRun.DoesNotExist:
        raise RunNotFound(run_id) from None


@transaction.atomic
def run_finish(
    *,
    run_id: int,
    outcome: RunOutcome,
    actor: str | None = None,
    stale_before: datetime | None = None,
) -> PluginRun:
    """Record how a running run ended: run row, counters, state and event, once.

    A run that already finished (say, reconciled as interrupted while its worker was slow) is
    left as it is and counted nowhere a second time. With `stale_before` (the reconciler), a
    run whose heartbeat is at or after it is alive after all and is left to its worker.
    """
    run = _locked_run(run_id)
    plugin = _locked_plugin(run.plugin.name)
    if run.status != RunStatus.RUNNING:
        return run
    if stale_before is not None and run.heartbeat_at and run.heartbeat_at >= stale_before:
        return run
    now = timezone.now()
    PluginRun.objects.filter(pk=run.pk).update(
        status=outcome.status,
        outcome=outcome.outcome,
        result=outcome.result,
        result_truncated=outcome.result_truncated,
        error_type=outcome.error_type,
        reason=outcome.reason,
        traceback=outcome.traceback,
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        peak_rss_kb=outcome.peak_rss_kb,
        duration_ms=outcome.duration_ms,
        stdout_tail=outcome.stdout_tail,
        stderr_tail=outcome.stderr_tail,
        warnings=list(outcome.warnings),
        finished_at=now,
        heartbeat_at=now,
    )
    counters: dict[str, Any] = {"running_count": F("running_count") - 1}
    if outcome.succeeded:
        counters.update(
            success_count=F("success_count") + 1, consecutive_failures=0, last_success_at=now
        )
    else:
        counters.update(
            error_count=F("error_count") + 1,
            consecutive_failures=F("consecutive_failures") + 1,
            last_error_at=now,
        )
    if outcome.duration_ms is not None:
        timed_runs = F("timed_run_count")  # runs without a duration (interrupted) are not in it
        counters.update(
            last_duration_ms=outcome.duration_ms,
            timed_run_count=timed_runs + 1,
            # SQL evaluates every right-hand side on the old row, so this is the running mean.
            avg_duration_ms=(
                Coalesce(F("avg_duration_ms"), Value(0.0)) * timed_runs + Value(outcome.duration_ms)
            )
            / (timed_runs + 1),
        )
    still_running = plugin.running_count - 1 > 0
    if still_running:
        to_state, reason = PluginState.RUNNING, plugin.reason
    elif outcome.succeeded:
        to_state, reason = PluginState.INITIALIZED, ""
    else:
        to_state, reason = PluginState.FAILED, outcome.reason
    if not outcome.succeeded and still_running:
        reason = outcome.reason  # the freshest failure is what an operator needs to read
    _transition(
        plugin, to_state, reason=reason, actor=actor or run.actor, run=run, extra_fields=counters
    )
    run.refresh_from_db()
    return run


@transaction.atomic
def run_refuse_unavailable(*, run_id: int, reason: str, actor: str | None = None) -> PluginRun:
    """The process running the call lacks what the plugin requires (`reason`, as a load words
    it): the run is closed refused and uncounted, and the plugin becomes UNAVAILABLE (it stays
    RUNNING, with the reason, while other runs are in progress)."""
    run = _locked_run(run_id)
    plugin = _locked_plugin(run.plugin.name)
    if run.status != RunStatus.RUNNING:
        return run
    now = timezone.now()
    PluginRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED,
        outcome="refused",
        reason=reasons.plugin_unavailable_refusal(plugin=plugin.name, reason=reason),
        finished_at=now,
        heartbeat_at=now,
    )
    still_running = plugin.running_count - 1 > 0
    _transition(
        plugin,
        PluginState.RUNNING if still_running else PluginState.UNAVAILABLE,
        reason=reason,
        actor=actor or run.actor,
        run=run,
        always_record=True,
        extra_fields={"running_count": F("running_count") - 1},
    )
    run.refresh_from_db()
    return run


def run_heartbeat(*, run_ids: list[int]) -> int:
    """Mark runs in progress as alive; returns how many were still running."""
    return PluginRun.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING).update(
        heartbeat_at=timezone.now()
    )


def runs_reconcile_interrupted(
    *, stale_after: timedelta, actor: str = SYSTEM_ACTOR, now: datetime | None = None
) -> list[PluginRun]:
    """Finish every RUNNING run whose heartbeat went stale as INTERRUPTED, counted once."""
    cutoff = (now or timezone.now()) - stale_after
    stale_ids = list(
        PluginRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff).values_list(
            "pk", flat=True
        )
    )
    finished = []
    for run_id in stale_ids:
        run = PluginRun.objects.select_related("plugin").get(pk=run_id)
        reason = reasons.run_interrupted(
            plugin=run.plugin.name, run_id=run.pk, worker=run.worker, last_seen=run.heartbeat_at
        )
        outcome = RunOutcome(
            status=RunStatus.INTERRUPTED,
            outcome=RunOutcomeKind.INTERRUPTED,
            error_type="Interrupted",
            reason=reason,
        )
        run = run_finish(run_id=run_id, outcome=outcome, actor=actor, stale_before=cutoff)
        if run.status == RunStatus.INTERRUPTED:
            finished.append(run)
    return finished


def runs_prune(
    *, older_than: timedelta, batch_size: int = 1000, now: datetime | None = None
) -> int:
    """Delete finished runs older than `older_than`, in batches; returns how many went.

    Plugin counters live on the plugin row and stay as they are; queued and running runs are
    never touched. Each batch is its own short transaction so writers are not held up.
    """
    cutoff = (now or timezone.now()) - older_than
    old = PluginRun.objects.filter(status__in=FINISHED_RUN_STATUSES, finished_at__lt=cutoff)
    total = 0
    while True:
        batch = list(old.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not batch:
            return total
        with transaction.atomic():
            _, per_model = old.filter(pk__in=batch).delete()
        total += per_model.get(PluginRun._meta.label, 0)


def plugin_disable(*, name: str, note: str, actor: str) -> Plugin:
    return _plugin_set_enabled(name=name, enabled=False, note=note, actor=actor)


def plugin_enable(*, name: str, note: str, actor: str) -> Plugin:
    return _plugin_set_enabled(name=name, enabled=True, note=note, actor=actor)


@transaction.atomic
def _plugin_set_enabled(*, name: str, enabled: bool, note: str, actor: str) -> Plugin:
    """Flip `enabled`: disabling records who, when and why on the plugin, enabling clears it."""
    plugin = _locked_plugin(name)
    now = timezone.now()
    Plugin.objects.filter(pk=plugin.pk).update(
        enabled=enabled,
        disabled_by="" if enabled else actor,
        disabled_at=None if enabled else now,
        disabled_note="" if enabled else note,
        updated_at=now,
    )
    PluginEvent.objects.create(
        plugin=plugin,
        kind=EventKind.ENABLED if enabled else EventKind.DISABLED,
        reason=note,
        actor=actor,
        created_at=now,
    )
    plugin.refresh_from_db()
    return plugin


@transaction.atomic
def plugin_reset_counters(*, name: str, note: str, actor: str) -> Plugin:
    """Zero the run counters (history rows stay); recorded as an event with who and why."""
    plugin = _locked_plugin(name)
    now = timezone.now()
    reason = reasons.counters_reset(
        successes=plugin.success_count,
        errors=plugin.error_count,
        consecutive=plugin.consecutive_failures,
        note=note,
    )
    Plugin.objects.filter(pk=plugin.pk).update(
        success_count=0,
        error_count=0,
        consecutive_failures=0,
        avg_duration_ms=None,
        timed_run_count=0,
        updated_at=now,
    )
    PluginEvent.objects.create(
        plugin=plugin,
        kind=EventKind.COUNTERS_RESET,
        reason=reason,
        actor=actor,
        created_at=now,
    )
    plugin.refresh_from_db()
    return plugin
