"""Row locks and state changes: the two moves every service makes in its transaction."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from plugins_app.errors import PluginNotFound, RunNotFound
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
from plugins_app.notifications.outbox import event_of_change, record_event
from plugins_app.transitions import check_transition


def locked_plugin(name: str) -> Plugin:
    try:
        return Plugin.objects.select_for_update().get(name=name)
    except Plugin.DoesNotExist:
        raise PluginNotFound(name) from None


def locked_run(run_id: int) -> PluginRun:
    """The run and its plugin (``run.plugin``), both locked by one statement."""
    try:
        return PluginRun.objects.select_for_update().select_related("plugin").get(pk=run_id)
    except PluginRun.DoesNotExist:
        raise RunNotFound(run_id) from None


def state_after_uncounted_run(plugin: Plugin) -> tuple[PluginState, str]:
    """Where a locked plugin goes when one of its runs ends uncounted (refused params, a
    cancel): RUNNING while others run, FAILED with its last failure's reason after failures,
    else INITIALIZED; never FAILED for that run."""
    if plugin.running_count - 1 > 0:
        return PluginState.RUNNING, plugin.reason
    if plugin.consecutive_failures:
        return PluginState.FAILED, _last_failure_reason(plugin)
    return PluginState.INITIALIZED, ""


def _last_failure_reason(plugin: Plugin) -> str:
    failed = (
        PluginRun.objects.filter(plugin=plugin, status__in=FINISHED_RUN_STATUSES)
        .exclude(status__in=(RunStatus.SUCCEEDED, RunStatus.CANCELLED))
        .exclude(outcome=RunOutcomeKind.REFUSED)
        .order_by("-finished_at", "-pk")
        .values_list("reason", flat=True)
        .first()
    )
    return failed or ""


def transition(
    plugin: Plugin,
    to_state: PluginState,
    *,
    reason: str,
    actor: str,
    run: PluginRun | None = None,
    always_record: bool = False,
    extra_fields: dict[str, Any] | None = None,
    reread: bool = True,
) -> None:
    """Move a locked plugin to `to_state`, writing the event row when the state changes.

    `always_record` keeps a re-check that lands in the same state (a reload that fails again)
    in the history with its new reason. `reread` False: the caller reads nothing of the
    plugin's row afterwards, so it is not read back (a webhook event still reads it).
    """
    from_state = plugin.state
    check_transition(plugin.name, from_state, to_state)
    now = timezone.now()
    fields: dict[str, Any] = {"reason": reason, **(extra_fields or {})}
    changed = from_state != to_state
    # Webhooks: the event, if any, is decided against the history before this change's row.
    notify = event_of_change(plugin, to_state=to_state) if changed or always_record else None
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
    if reread or notify:
        plugin.refresh_from_db()
    if notify:
        record_event(
            plugin, kind=notify, reason=reason, actor=actor, run_id=run.pk if run else None
        )
