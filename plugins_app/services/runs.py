"""Services for a run's life: queued, started, finished (counted once), refused, kept
alive by heartbeats, reconciled when its worker went silent, pruned."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from plugins_app import reasons, reasons_policy, run_tallies, run_waits
from plugins_app.errors import IllegalTransition, PluginRefused
from plugins_app.models import (
    FINISHED_RUN_STATUSES,
    Plugin,
    PluginRun,
    PluginState,
    RunOutcomeKind,
    RunStatus,
)
from plugins_app.params_check import check_params
from plugins_app.services import quarantine, retries
from plugins_app.services.cancels import close_cancelled
from plugins_app.services.rows import (
    locked_plugin,
    locked_run,
    state_after_uncounted_run,
    transition,
)

SYSTEM_ACTOR = "system"


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
    memory_mechanism: str = ""
    mode: str = ""  # fork or resident: how the sandbox ran it
    environment: dict[str, Any] = field(default_factory=dict)
    duration_ms: float | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.status == RunStatus.SUCCEEDED


def _refusal(plugin: Plugin, now: datetime) -> str | None:
    if not plugin.enabled:
        return reasons.plugin_disabled(
            plugin=plugin.name, by=plugin.disabled_by, note=plugin.disabled_note
        )
    if plugin.state == PluginState.UNAVAILABLE:
        return reasons.plugin_unavailable_refusal(plugin=plugin.name, reason=plugin.reason)
    return quarantine.refusal(plugin, now=now)


@transaction.atomic
def run_queue(*, name: str, params: dict[str, Any], actor: str) -> PluginRun:
    """Create a queued run, or refuse without counting anything: PluginRefused (disabled,
    quarantined, UNAVAILABLE), InvalidParams (params that do not fit run() or the
    params_schema)."""
    plugin = locked_plugin(name)
    refusal = _refusal(plugin, timezone.now())
    if refusal:
        raise PluginRefused(refusal)
    check_params(
        name=name,
        params=params,
        run_params=plugin.run_params,
        params_schema=plugin.params_schema,
    )
    return PluginRun.objects.create(plugin=plugin, params=params, actor=actor)


@transaction.atomic
def run_start(*, run_id: int, worker: str) -> PluginRun:
    """A worker picked the run up: the run and the plugin become RUNNING.

    Returns the run; its status is FAILED instead of RUNNING when the plugin was disabled,
    quarantined or became UNAVAILABLE while the run waited, and then nothing is counted. The
    claim is conditional: a run already claimed, or a retry whose backoff is not over, raises
    IllegalTransition and is left as it is.
    """
    run = locked_run(run_id)
    plugin = run.plugin
    if run.status != RunStatus.QUEUED:
        raise IllegalTransition(
            f"Run {run_id} of plugin '{plugin.name}' is {run.status}, not queued, and cannot "
            "start again (queue a new run instead)"
        )
    now = timezone.now()
    if run.not_before is not None and run.not_before > now:
        raise IllegalTransition(
            f"Run {run_id} of plugin '{plugin.name}' is a retry waiting for its backoff until "
            f"{run.not_before.isoformat()} (it starts then; nothing to do)"
        )
    refusal = _refusal(plugin, now)
    if refusal:
        # Disabled, quarantined or made UNAVAILABLE while queued: close it, count nothing.
        PluginRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED, outcome=RunOutcomeKind.REFUSED, reason=refusal, finished_at=now
        )
        run_waits.announce_finished(run.pk)
        if run.not_before is not None:
            retries.refresh_next_retry(plugin)
        run.refresh_from_db()
        return run
    quarantine.claim_probe(plugin, run, now=now)
    started = {
        "status": RunStatus.RUNNING,
        "started_at": now,
        "heartbeat_at": now,
        "worker": worker,
        # Reconcilers elsewhere may have other settings: the starter's limit is the run's.
        "stale_after": timedelta(seconds=settings.PORTAL_RUN_STALE_AFTER_S),
    }
    PluginRun.objects.filter(pk=run.pk).update(**started)
    if run.not_before is not None:
        retries.refresh_next_retry(plugin)
    transition(
        plugin,
        PluginState.RUNNING,
        reason="",
        actor=run.actor,
        run=run,
        extra_fields={"running_count": F("running_count") + 1, "last_run_at": now},
        reread=False,  # the caller calls the plugin: its code, limits and source, unchanged here
    )
    for column, value in started.items():  # what was written, without reading the row again
        setattr(run, column, value)
    return run


@transaction.atomic
def run_refuse_queued(*, run_id: int, reason: str) -> PluginRun:
    """A queued run that cannot be delivered (the broker is unreachable): closed refused and
    uncounted, the plugin untouched; a run that started meanwhile is left to its worker."""
    run = locked_run(run_id)
    if run.status == RunStatus.QUEUED:
        PluginRun.objects.filter(pk=run.pk).update(
            status=RunStatus.FAILED,
            outcome=RunOutcomeKind.REFUSED,
            reason=reason,
            finished_at=timezone.now(),
        )
        run_waits.announce_finished(run.pk)
        run.refresh_from_db()
    return run


@transaction.atomic
def run_finish(
    *,
    run_id: int,
    outcome: RunOutcome,
    actor: str | None = None,
    stale_as_of: datetime | None = None,
    default_stale_after: timedelta = timedelta(0),
) -> PluginRun:
    """Record how a running run ended: run row, counters, state and event, once.

    A run that already finished (say, reconciled as interrupted while its worker was slow) is
    left as it is and counted nowhere a second time. With `stale_as_of` (the reconciler's
    now), a run whose heartbeat is within its own stale limit then (`default_stale_after` for
    a run that recorded none) is alive after all and is left to its worker.
    """
    run = locked_run(run_id)
    plugin = run.plugin
    if run.status != RunStatus.RUNNING:
        return run
    if stale_as_of is not None and run.heartbeat_at is not None:
        limit = run.stale_after if run.stale_after is not None else default_stale_after
        if run.heartbeat_at + limit >= stale_as_of:
            return run
    if outcome.status == RunStatus.CANCELLED:  # its call was cancelled: not a plugin failure
        close_cancelled(
            run,
            plugin,
            actor=actor or SYSTEM_ACTOR,
            reason=outcome.reason,
            duration_ms=outcome.duration_ms,
        )
        run.refresh_from_db()
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
        memory_mechanism=outcome.memory_mechanism,
        mode=outcome.mode,
        environment=outcome.environment,
        duration_ms=outcome.duration_ms,
        stdout_tail=outcome.stdout_tail,
        stderr_tail=outcome.stderr_tail,
        warnings=list(outcome.warnings),
        finished_at=now,
        heartbeat_at=now,
    )
    run_waits.announce_finished(run.pk)
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
    label = run_tallies.outcome_label(
        succeeded=outcome.succeeded, outcome=outcome.outcome, status=outcome.status
    )
    run_tallies.tally_finished_run(
        plugin_id=plugin.pk, label=label, duration_ms=outcome.duration_ms
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
    transition(
        plugin, to_state, reason=reason, actor=actor or run.actor, run=run, extra_fields=counters
    )
    failure = "" if outcome.succeeded else outcome.reason
    quarantine.after_finish(plugin, run, succeeded=outcome.succeeded, failure=failure, now=now)
    if not outcome.succeeded:
        retries.schedule_retry(plugin, run, outcome=outcome.outcome, status=outcome.status, now=now)
    run.refresh_from_db()
    return run


PARAMS_REFUSED = "ParamsRefused"  # error_type of a run the call's own params check refused


def _close_refused(run: PluginRun, *, reason: str, error_type: str = "") -> None:
    """Close a running run as refused: failed, nothing counted (the caller moves the plugin)."""
    now = timezone.now()
    PluginRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED,
        outcome=RunOutcomeKind.REFUSED,
        error_type=error_type,
        reason=reason,
        finished_at=now,
        heartbeat_at=now,
    )
    run_waits.announce_finished(run.pk)


@transaction.atomic
def run_refuse_unavailable(*, run_id: int, reason: str, actor: str | None = None) -> PluginRun:
    """The process running the call lacks what the plugin requires (`reason`, as a load words
    it): the run is closed refused and uncounted, and the plugin becomes UNAVAILABLE (it stays
    RUNNING, with the reason, while other runs are in progress)."""
    run = locked_run(run_id)
    plugin = run.plugin
    if run.status != RunStatus.RUNNING:
        return run
    refusal = reasons.plugin_unavailable_refusal(plugin=plugin.name, reason=reason)
    _close_refused(run, reason=refusal)
    still_running = plugin.running_count - 1 > 0
    transition(
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


@transaction.atomic
def run_refuse_params(*, run_id: int, reason: str, actor: str | None = None) -> PluginRun:
    """The call's process found the params do not fit run() (it changed since the load): the
    caller's mistake, so the run is closed refused and uncounted, and the plugin goes back to
    what its counters say (FAILED with its last failure's reason after failures, else
    INITIALIZED), never FAILED for this run."""
    run = locked_run(run_id)
    plugin = run.plugin
    if run.status != RunStatus.RUNNING:
        return run
    _close_refused(run, reason=reason, error_type=PARAMS_REFUSED)
    to_state, state_reason = state_after_uncounted_run(plugin)
    transition(
        plugin,
        to_state,
        reason=state_reason,
        actor=actor or run.actor,
        run=run,
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
    """Finish as INTERRUPTED, counted once, every RUNNING run silent for longer than the stale
    limit it was started with (`stale_after` for a run that recorded none)."""
    now = now or timezone.now()
    limit = Coalesce(F("stale_after"), Value(stale_after, output_field=DurationField()))
    stale_at = ExpressionWrapper(F("heartbeat_at") + limit, output_field=DateTimeField())
    running = PluginRun.objects.filter(status=RunStatus.RUNNING).annotate(stale_at=stale_at)
    stale_ids = list(running.filter(stale_at__lt=now).values_list("pk", flat=True))
    finished = []
    for run_id in stale_ids:
        run = PluginRun.objects.select_related("plugin").get(pk=run_id)
        outcome = RunOutcome(
            status=RunStatus.INTERRUPTED,
            outcome=RunOutcomeKind.INTERRUPTED,
            error_type="Interrupted",
            reason=_interrupted_reason(run),
        )
        run = run_finish(
            run_id=run_id,
            outcome=outcome,
            actor=actor,
            stale_as_of=now,
            default_stale_after=stale_after,
        )
        if run.status == RunStatus.INTERRUPTED:
            finished.append(run)
    return finished


def _interrupted_reason(run: PluginRun) -> str:
    """Why the run was interrupted; on its last attempt after only interruptions, that the
    plugin likely takes its worker down (a poison run), so nobody just reruns it."""
    attempts = retries.policy_of(run.plugin)["max_attempts"]
    if 1 < attempts <= run.attempt and run.retry_of_id is not None:
        earlier = PluginRun.objects.filter(
            Q(pk=run.retry_of_id) | Q(retry_of_id=run.retry_of_id), attempt__lt=run.attempt
        )
        if not earlier.exclude(status=RunStatus.INTERRUPTED).exists():
            return reasons_policy.run_interrupted_every_attempt(
                plugin=run.plugin.name,
                run_id=run.pk,
                attempt=run.attempt,
                attempts=attempts,
                worker=run.worker,
                last_seen=run.heartbeat_at,
            )
    return reasons.run_interrupted(
        plugin=run.plugin.name, run_id=run.pk, worker=run.worker, last_seen=run.heartbeat_at
    )


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
