"""Routing: the queue a plugin's runs go to, and the live workers serving each queue."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Case, F, Value, When
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from plugin_contract import QUEUE_PATTERN
from plugins_app import reasons
from plugins_app.fleet.models import Worker
from plugins_app.models import Plugin

DEFAULT_QUEUE = "default"
GPU_QUEUE = "gpu"


def is_queue_name(name: str) -> bool:
    return bool(QUEUE_PATTERN.fullmatch(name))


def queue_of(plugin: Plugin) -> str:
    """The operator's override, else the module's declaration, else 'gpu' for a plugin that
    requires a GPU, else 'default'."""
    if plugin.queue or plugin.declared_queue:
        return plugin.queue or plugin.declared_queue
    requires = plugin.requirements or {}
    return GPU_QUEUE if requires.get("gpu") else DEFAULT_QUEUE


def route_expression(prefix: str = "") -> Coalesce:
    """queue_of in SQL, on the plugin at `prefix` ("plugin__" from a run)."""
    return Coalesce(
        NullIf(F(f"{prefix}queue"), Value("")),
        NullIf(F(f"{prefix}declared_queue"), Value("")),
        Case(
            When(**{f"{prefix}requirements__gpu": True}, then=Value(GPU_QUEUE)),
            default=Value(DEFAULT_QUEUE),
        ),
    )


def live_workers():
    """Workers running and heard from within the stale limit, by name."""
    cutoff = timezone.now() - timedelta(seconds=settings.PORTAL_RUN_STALE_AFTER_S)
    return Worker.objects.filter(stopped_at__isnull=True, heartbeat_at__gte=cutoff)


def live_workers_per_queue() -> Counter[str]:
    """How many live workers consume each queue."""
    counts: Counter[str] = Counter()
    for queues in live_workers().values_list("queues", flat=True):
        counts.update(set(queues or ()))
    return counts


def queue_overview() -> list[dict[str, Any]]:
    """Each queue that a plugin routes to or a live worker serves: its live workers and its
    plugins, with the reason to start a worker where none serves it."""
    serving = live_workers_per_queue()
    routed: dict[str, list[str]] = {}
    for plugin in Plugin.objects.only("name", "queue", "declared_queue", "requirements"):
        routed.setdefault(queue_of(plugin), []).append(plugin.name)
    overview = []
    for queue in sorted(set(routed) | set(serving)):
        names = sorted(routed.get(queue, []))
        reason = ""
        if names and not serving[queue]:
            reason = reasons.queue_unserved(queue=queue, plugins=", ".join(names))
        overview.append(
            {"queue": queue, "live_workers": serving[queue], "plugins": names, "reason": reason}
        )
    return overview


def unserved_reason(name: str) -> str:
    """Why runs of plugin `name` would wait (no live worker serves its queue), or ''."""
    plugin = Plugin.objects.filter(name=name).first()
    if plugin is None:
        return ""
    queue = queue_of(plugin)
    if live_workers_per_queue()[queue]:
        return ""
    return reasons.no_live_worker(plugin=name, queue=queue)
