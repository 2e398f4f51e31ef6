"""Routing: the queue a plugin's runs go to, and the live workers serving each queue."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from plugin_contract import QUEUE_PATTERN
from plugins_app.fleet.celery_app import DEFAULT_QUEUE
from plugins_app.fleet.models import Worker
from plugins_app.models import Plugin

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
