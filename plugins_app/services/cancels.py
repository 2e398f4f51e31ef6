"""Cancelling a run: it ends CANCELLED, in one transaction with its event and the plugin's
counters, and is no failure of the plugin (not counted, not retried, no quarantine step).

A queued run never starts (the claim in run_start finds it finished). A running run is
finished here at once, whichever process runs it: the database is the authority, and that
process's cancel watch (plugins_app/cancel_watch.py) sees the row and kills the call.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from plugins_app import reasons_cancel, run_tallies, run_waits
from plugins_app.errors import RunAlreadyFinished
from plugins_app.models import EventKind, Plugin, PluginEvent, PluginRun, RunOutcomeKind, RunStatus
from plugins_app.services import retries
from plugins_app.services.rows import (
    locked_run,
    state_after_uncounted_run,
    transition,
)

CANCELLABLE = (RunStatus.QUEUED, RunStatus.RUNNING)


@transaction.atomic
def run_cancel(*, run_id: int, actor: str) -> PluginRun:
    """Cancel a queued or running run on behalf of `actor` (user:NAME, api:NAME); RunNotFound
    for an unknown run, RunAlreadyFinished for one that ended."""
    run = locked_run(run_id)
    plugin = run.plugin
    if run.status not in CANCELLABLE:
        raise RunAlreadyFinished(
            reasons_cancel.cancel_of_finished_run(
                plugin=plugin.name, run_id=run.pk, status=run.status
            )
        )
    reason = reasons_cancel.run_cancelled(
        plugin=plugin.name, run_id=run.pk, by=actor, was_running=run.status == RunStatus.RUNNING
    )
    close_cancelled(run, plugin, actor=actor, reason=reason)
    run.refresh_from_db()
    return run


def close_cancelled(
    run: PluginRun, plugin: Plugin, *, actor: str, reason: str, duration_ms: float | None = None
) -> None:
    """Under the locks of `run` (queued or running) and its plugin: the run CANCELLED, its
    event, and for a running one the plugin's running count and state (never FAILED for it).
    `duration_ms`: as the sandbox measured it; else the time since the run started."""
    now = timezone.now()
    was_running = run.status == RunStatus.RUNNING
    if duration_ms is None and was_running and run.started_at is not None:
        duration_ms = (now - run.started_at).total_seconds() * 1000
    PluginRun.objects.filter(pk=run.pk).update(
        status=RunStatus.CANCELLED,
        outcome=RunOutcomeKind.CANCELLED,
        error_type="Cancelled",
        reason=reason,
        cancelled_by=actor,
        duration_ms=duration_ms,
        finished_at=now,
        heartbeat_at=now if was_running else run.heartbeat_at,
    )
    run_waits.announce_finished(run.pk)  # a `?wait=` on it returns now, not at its next recheck
    # /metrics counts it apart from failures; its duration stays out of the histogram.
    run_tallies.tally_finished_run(
        plugin_id=plugin.pk, label=RunOutcomeKind.CANCELLED.value, duration_ms=None
    )
    PluginEvent.objects.create(
        plugin=plugin,
        kind=EventKind.RUN_CANCELLED,
        from_state=plugin.state,
        to_state=plugin.state,
        reason=reason,
        actor=actor,
        run=run,
        created_at=now,
    )
    if was_running:
        to_state, state_reason = state_after_uncounted_run(plugin)
        transition(
            plugin,
            to_state,
            reason=state_reason,
            actor=actor,
            run=run,
            extra_fields={"running_count": F("running_count") - 1},
        )
    elif run.not_before is not None:
        retries.refresh_next_retry(plugin)  # a waiting retry: the plugin's next one changes
