"""Services for worker nodes (the celery executor): registered at start, kept alive by their
heartbeat, marked stopped at a graceful shutdown; the load requests they answer; and a
plugin's queue override."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from plugins_app import reasons
from plugins_app.models import EventKind, LoadRequest, PluginEvent, Worker
from plugins_app.services.rows import locked_plugin


@dataclass(frozen=True)
class NodeEnvironment:
    """Where a worker node runs: what preflight on its queue sees."""

    host: str
    pid: int
    python_version: str
    platform: str
    gpu: bool


def worker_register(
    *, name: str, queues: list[str], concurrency: int, environment: NodeEnvironment
) -> Worker:
    """Record a starting worker node (a restarted node keeps its row, with a new start)."""
    now = timezone.now()
    worker, _ = Worker.objects.update_or_create(
        name=name,
        defaults={
            "host": environment.host,
            "pid": environment.pid,
            "queues": queues,
            "concurrency": concurrency,
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": None,
            "runs_in_flight": 0,
            "python_version": environment.python_version,
            "platform": environment.platform,
            "gpu": environment.gpu,
        },
    )
    return worker


def worker_heartbeat(*, name: str, runs_in_flight: int) -> int:
    """The node is alive with so many runs in progress; returns 1, or 0 for an unknown node."""
    return Worker.objects.filter(name=name).update(
        heartbeat_at=timezone.now(), runs_in_flight=runs_in_flight
    )


def worker_stopped(*, name: str) -> None:
    """The node shut down gracefully: shown as stopped, not lost."""
    Worker.objects.filter(name=name).update(stopped_at=timezone.now(), runs_in_flight=0)


@transaction.atomic
def plugin_set_queue(*, name: str, queue: str, actor: str) -> None:
    """Route the plugin's runs to `queue` ('' goes back to its default), recorded as an event."""
    plugin = locked_plugin(name)
    if plugin.queue == queue:
        return
    previous = plugin.queue
    type(plugin).objects.filter(pk=plugin.pk).update(queue=queue)
    PluginEvent.objects.create(
        plugin=plugin,
        kind=EventKind.QUEUE_CHANGED,
        from_state=plugin.state,
        to_state=plugin.state,
        reason=reasons.queue_changed(plugin=name, previous=previous, queue=queue),
        actor=actor,
    )


def load_request_create(
    *, names: list[str], actor: str, queue: str, forwarded_from: int | None = None
) -> LoadRequest:
    """A load of `names` asked of a node of `queue` (fleet/loads.py sends its id); a forward
    names the request whose node found that the plugins declare `queue`."""
    return LoadRequest.objects.create(
        names=names, actor=actor, queue=queue, forwarded_from_id=forwarded_from
    )


def load_request_claim(*, request_id: int) -> int | None:
    """Count one more delivery of the request to a node; its number, or None once answered."""
    with transaction.atomic():
        claimed = LoadRequest.objects.filter(pk=request_id, finished_at__isnull=True).update(
            attempts=F("attempts") + 1
        )
        if not claimed:
            return None
        return LoadRequest.objects.values_list("attempts", flat=True).get(pk=request_id)


def load_request_finish(*, request_id: int, outcome: dict[str, Any]) -> int:
    """The node's answer, written once: 0 when the request was answered already."""
    return LoadRequest.objects.filter(pk=request_id, finished_at__isnull=True).update(
        outcome=outcome, finished_at=timezone.now()
    )
