"""Services for a plugin's life: registered by a load, initialised, failed or unavailable,
disabled and enabled by operators, its counters reset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from plugins_app import reasons
from plugins_app.errors import IllegalTransition
from plugins_app.models import AVAILABLE_STATES, EventKind, Plugin, PluginEvent, PluginState
from plugins_app.services.rows import locked_plugin, transition
from plugins_app.sources import PluginSource
from plugins_app.transitions import check_transition


@dataclass(frozen=True)
class PluginMetadata:
    """What a load found out about a plugin module."""

    source: PluginSource = field(default_factory=PluginSource)
    description: str = ""
    version: str = ""
    requirements: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    run_params: dict[str, Any] | None = None  # plugin_contract.RunParams, or None if unknown
    params_schema: dict[str, Any] | None = None
    declared_queue: str = ""  # the worker queue the module declares; empty for the default
    retry: dict[str, Any] | None = None  # plugin_contract.policies.RetryPolicy, or None
    quarantine_after: int | None = None  # None: the portal's default
    schedule: dict[str, Any] | None = None  # declared; kept as a Schedule row, not a column
    resident: dict[str, Any] | None = None  # resident mode's knobs; None: fork per call


@transaction.atomic
def plugin_register(*, name: str, metadata: PluginMetadata, actor: str) -> Plugin:
    """Record that a plugin's module imported: new plugins appear, known ones go to LOADED.

    A failure of an earlier load (and its traceback) is cleared.
    """
    fields = {**_metadata_fields(metadata), "load_failed": False, "load_traceback": ""}
    plugin = Plugin.objects.select_for_update().filter(name=name).first()
    if plugin is None:
        return _plugin_create(name=name, state=PluginState.LOADED, reason="", actor=actor, **fields)
    if plugin.running_count:
        raise IllegalTransition(
            reasons.reload_while_running(plugin=name, running=plugin.running_count)
        )
    transition(plugin, PluginState.LOADED, reason="", actor=actor, extra_fields=fields)
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
    plugin = locked_plugin(name)
    transition(plugin, PluginState.INITIALIZED, reason="", actor=actor)
    return plugin


@transaction.atomic
def plugin_mark_failed(
    *,
    name: str,
    reason: str,
    actor: str,
    source: PluginSource | None = None,
    metadata: PluginMetadata | None = None,
    load_traceback: str = "",
) -> Plugin:
    """A load broke (import error, failing setup, crash, hang): transient, FAILED.

    `metadata` records what the plugin declared when its module imported before it broke;
    `load_traceback` the traceback of its import or setup(), when one raised. The plugin is
    marked `load_failed` until a load succeeds: a rerun would fail the same way.
    """
    return _mark_broken(
        name,
        PluginState.FAILED,
        reason=reason,
        actor=actor,
        source=source,
        metadata=metadata,
        load_traceback=load_traceback,
    )


@transaction.atomic
def plugin_mark_unavailable(
    *,
    name: str,
    reason: str,
    actor: str,
    source: PluginSource | None = None,
    metadata: PluginMetadata | None = None,
    load_traceback: str = "",
) -> Plugin:
    """The environment lacks something the plugin needs: UNAVAILABLE until a reload.

    `load_traceback`: the traceback of the import or setup() that showed it, if one raised.
    """
    return _mark_broken(
        name,
        PluginState.UNAVAILABLE,
        reason=reason,
        actor=actor,
        source=source,
        metadata=metadata,
        load_traceback=load_traceback,
    )


def _metadata_fields(metadata: PluginMetadata) -> dict[str, Any]:
    return {
        **metadata.source.fields(),
        "description": metadata.description,
        "version": metadata.version,
        "requirements": metadata.requirements or {},
        "limits": metadata.limits or {},
        "run_params": metadata.run_params,
        "params_schema": metadata.params_schema,
        "declared_queue": metadata.declared_queue,
        "retry_declared": metadata.retry,
        "quarantine_after_declared": metadata.quarantine_after,
        "resident": metadata.resident,
    }


def _mark_broken(
    name: str,
    state: PluginState,
    *,
    reason: str,
    actor: str,
    source: PluginSource | None,
    metadata: PluginMetadata | None = None,
    load_traceback: str,
) -> Plugin:
    """FAILED by a load (marked `load_failed`: runs would fail the same way until a load
    succeeds) or UNAVAILABLE, with the load's traceback when its import or setup() raised."""
    plugin = Plugin.objects.select_for_update().filter(name=name).first()
    extra = _metadata_fields(metadata) if metadata is not None else {}
    extra.update(load_failed=state == PluginState.FAILED, load_traceback=load_traceback)
    if source is not None:
        extra.update(source.fields())
    if plugin is None:
        return _plugin_create(name=name, state=state, reason=reason, actor=actor, **extra)
    if plugin.running_count:
        raise IllegalTransition(
            reasons.reload_while_running(plugin=name, running=plugin.running_count)
        )
    transition(plugin, state, reason=reason, actor=actor, always_record=True, extra_fields=extra)
    return plugin


def plugin_disable(*, name: str, note: str, actor: str) -> Plugin:
    return _plugin_set_enabled(name=name, enabled=False, note=note, actor=actor)


def plugin_enable(*, name: str, note: str, actor: str) -> Plugin:
    return _plugin_set_enabled(name=name, enabled=True, note=note, actor=actor)


@transaction.atomic
def _plugin_set_enabled(*, name: str, enabled: bool, note: str, actor: str) -> Plugin:
    """Flip `enabled`: disabling records who, when and why on the plugin, enabling clears it."""
    plugin = locked_plugin(name)
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
    plugin = locked_plugin(name)
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
