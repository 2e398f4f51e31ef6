"""Deliveries written in the transaction of the change they report: a rolled-back change
sends nothing, a committed one is never lost; the deliverer is woken once it commits."""

from __future__ import annotations

import json
import uuid

from django.db.models import Q
from django.utils import timezone

from plugins_app.models import EventKind, Plugin, PluginEvent
from plugins_app.notifications import events
from plugins_app.notifications.deliverer import wake_after_commit
from plugins_app.notifications.models import Webhook, WebhookDelivery
from plugins_app.selectors import health_record


def _subscribed(plugin: Plugin, kind: str) -> list[Webhook]:
    hooks = Webhook.objects.filter(enabled=True).filter(Q(plugin__isnull=True) | Q(plugin=plugin))
    return [hook for hook in hooks if not hook.events or kind in hook.events]


def _last_settled_state(plugin: Plugin) -> str | None:
    return (
        PluginEvent.objects.filter(
            plugin=plugin, kind=EventKind.STATE_CHANGED, to_state__in=events.SETTLED_STATES
        )
        .order_by("-created_at", "-id")
        .values_list("to_state", flat=True)
        .first()
    )


def event_of_change(plugin: Plugin, *, to_state: str) -> str | None:
    """The event a change of the locked `plugin` to `to_state` raises, if any webhook could
    want one; asked before the change's own history row is written."""
    if to_state not in events.SETTLED_STATES:
        return None
    if not Webhook.objects.filter(enabled=True).exists():  # the common case: one cheap query
        return None
    return events.event_for_change(previous=_last_settled_state(plugin), current=to_state)


def record_event(
    plugin: Plugin,
    *,
    kind: str,
    reason: str,
    actor: str,
    run_id: int | None = None,
) -> list[WebhookDelivery]:
    """Write one delivery per webhook subscribed to `kind` for this plugin, in the caller's
    transaction (quarantine calls this with its own kind)."""
    if kind not in events.EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}: register it with register_event_kind()")
    hooks = _subscribed(plugin, kind)
    if not hooks:
        return []
    now = timezone.now()
    event = {
        "id": str(uuid.uuid4()),
        "kind": kind,
        "plugin": plugin.name,
        "state": plugin.state,
        "reason": reason or None,
        "actor": actor,
        "run_id": run_id,
        "at": now.isoformat().replace("+00:00", "Z"),
    }
    body = json.dumps({"event": event, "health": health_record(plugin, now=now)}, sort_keys=True)
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            webhook=hook,
            plugin_name=plugin.name,
            event=kind,
            body=body,
            next_attempt_at=now,
            created_at=now,
        )
        for hook in hooks
    )
    wake_after_commit()
    return deliveries
