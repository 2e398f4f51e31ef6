"""Loads and reloads of named plugins on a worker node of each plugin's queue, so preflight
(import, `requires`, setup()) checks the environment the plugin will run in and the asking
process (a web process, a command) starts no sandbox host.

The message carries a LoadRequest id; the node loads, writes the reports (or the refusal)
into the request, and the asker reads them back from the database. A plugin not registered
yet goes to 'default'; when its node finds that it declares another queue, it forwards the
load there once (a LoadRequest with `forwarded_from`), and the asker waits for that answer.
A load of every plugin only discovers files here (no import) and loads each on a node.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError

from plugins_app import reasons, reasons_policy, services
from plugins_app.discovery import discover
from plugins_app.errors import (
    IllegalTransition,
    PluginError,
    PluginNotFound,
    PluginRefused,
    TooManyVanished,
)
from plugins_app.fleet.celery_app import LOAD_PLUGINS_TASK, celery_app, portal_queue
from plugins_app.fleet.queues import DEFAULT_QUEUE, live_workers_per_queue, queue_of
from plugins_app.loader import LoadReport, load_plugins, record_vanished, refuse_mass_vanishing
from plugins_app.models import LoadRequest, Plugin
from plugins_app.sources import PluginSource

MAX_LOAD_DELIVERIES = 2  # a load whose node died this often is not tried a third time
POLL_S = 0.05  # the node's write is in another database connection: nothing to subscribe to
REFUSALS: dict[str, type[PluginError]] = {
    "IllegalTransition": IllegalTransition,
    "TooManyVanished": TooManyVanished,
    "PluginRefused": PluginRefused,
}


def load_all_on_workers(*, actor: str, prune: bool) -> list[LoadReport]:
    """Every plugin found, each loaded on a node of its queue; discovery (file names, no
    import) and the plugins no longer found are handled here, as loader.load_plugins does."""
    found = discover()
    names = sorted({spec.name for spec in found.specs})
    missing = sorted(set(Plugin.objects.values_list("name", flat=True)) - set(names))
    if not prune:
        refuse_mass_vanishing(missing, found)
    reports = load_on_workers(names=names, actor=actor) if names else []
    for name in missing:
        report = record_vanished(name, found, actor)
        if report is not None:
            reports.append(report)
    return sorted(reports, key=lambda report: report.name)


def load_on_workers(*, names: Sequence[str], actor: str) -> list[LoadReport]:
    """Load the named plugins, each on a live node of its queue (unregistered names: 'default');
    PluginRefused, naming what to start, when no live node serves a queue."""
    wanted = list(dict.fromkeys(names))
    routed = {plugin.name: queue_of(plugin) for plugin in Plugin.objects.filter(name__in=wanted)}
    groups: dict[str, list[str]] = {}
    for name in wanted:
        groups.setdefault(routed.get(name, DEFAULT_QUEUE), []).append(name)
    serving = live_workers_per_queue()
    for queue, group in groups.items():
        if not serving[queue]:
            raise PluginRefused(reasons.load_without_worker(plugin=group[0], queue=queue))
    requests = [
        services.load_request_create(names=group, actor=actor, queue=queue)
        for queue, group in groups.items()
    ]
    try:
        for request in requests:
            transaction.on_commit(functools.partial(_send, request))
    except OperationalError as error:
        raise PluginRefused(
            reasons.broker_unreachable(plugin=wanted[0], what="The load", problem=str(error))
        ) from None
    reports: list[LoadReport] = []
    for request in requests:
        reports.extend(_answered(request))
    return sorted(reports, key=lambda report: report.name)


def _answered(request: LoadRequest) -> list[LoadReport]:
    """The request's reports, those of plugins its node forwarded replaced by the forward's."""
    outcome = _finished(request)
    reports = {report.name: report for report in _reports(outcome)}
    for forward_id in outcome.get("forwarded", []):
        forward = LoadRequest.objects.get(pk=forward_id)
        reports.update({report.name: report for report in _reports(_finished(forward))})
    return list(reports.values())


def _send(request: LoadRequest) -> None:
    celery_app().send_task(
        LOAD_PLUGINS_TASK,
        args=[request.pk],
        queue=portal_queue(request.queue),
        routing_key=request.queue,
    )


def _finished(request: LoadRequest) -> dict[str, Any]:
    # Each load may take the load timeout, once more when retried alone, and a queue wait.
    waited_s = settings.PORTAL_PLUGIN_LOAD_TIMEOUT_S * 2 * len(request.names) + 60
    deadline = time.monotonic() + waited_s
    while time.monotonic() < deadline:
        outcome = (
            LoadRequest.objects.filter(pk=request.pk, finished_at__isnull=False)
            .values_list("outcome", flat=True)
            .first()
        )
        if outcome is not None:
            return outcome
        time.sleep(POLL_S)
    raise PluginRefused(
        reasons.load_not_answered(
            plugin=request.names[0], queue=request.queue, waited_s=round(waited_s)
        )
    )


def _reports(outcome: dict[str, Any]) -> list[LoadReport]:
    error = outcome.get("error")
    if error == "PluginNotFound":
        raise PluginNotFound(outcome.get("name", ""))
    if error:
        raise REFUSALS.get(error, PluginError)(outcome.get("message", ""))
    return [LoadReport(**report) for report in outcome.get("reports", [])]


def load_outcome(request: LoadRequest) -> dict[str, Any]:
    """What a node writes back for a LoadRequest: the reports, or the refusal as data, and
    the forwards of plugins that declare another queue."""
    try:
        reports = load_plugins(names=request.names, actor=request.actor)
    except PluginNotFound as error:
        return {"error": "PluginNotFound", "name": error.name, "message": str(error)}
    except PluginError as error:
        return {"error": type(error).__name__, "message": str(error)}
    forwarded: list[int] = []
    if request.forwarded_from_id is None:  # forwarded once at most: no ping-pong
        reports, forwarded = _forward_elsewhere(request, reports)
    return {"reports": [report.__dict__ for report in reports], "forwarded": forwarded}


def load_refused_as_poison(request: LoadRequest, *, tried: int) -> dict[str, Any]:
    """The answer to a load whose every delivery lost its node: each plugin FAILED, saying it
    likely takes its worker down, without importing it again."""
    found = {spec.name: spec for spec in discover().specs}
    reports = []
    for name in request.names:
        reason = reasons_policy.load_took_node_down(
            plugin=name, attempts=tried, queue=request.queue
        )
        spec = found.get(name)
        source = PluginSource.of_spec(spec) if spec is not None else None
        try:
            plugin = services.plugin_mark_failed(
                name=name, reason=reason, actor=request.actor, source=source
            )
        except IllegalTransition:  # runs in progress: they end first, as with a reload
            plugin = Plugin.objects.get(name=name)
        reports.append(LoadReport(name, plugin.state, plugin.reason, plugin.source).__dict__)
    return {"reports": reports, "forwarded": []}


def _forward_elsewhere(
    request: LoadRequest, reports: list[LoadReport]
) -> tuple[list[LoadReport], list[int]]:
    """Send the load of each plugin that routes to another queue to a node of that queue; a
    queue no live node serves makes the plugin UNAVAILABLE, saying which node to start."""
    elsewhere: dict[str, list[str]] = {}
    for plugin in Plugin.objects.filter(name__in=[report.name for report in reports]):
        queue = queue_of(plugin)
        if queue != request.queue:
            elsewhere.setdefault(queue, []).append(plugin.name)
    serving = live_workers_per_queue()
    kept = {report.name: report for report in reports}
    forwarded = []
    for queue, names in sorted(elsewhere.items()):
        if serving[queue]:
            forward = services.load_request_create(
                names=names, actor=request.actor, queue=queue, forwarded_from=request.pk
            )
            _send(forward)
            forwarded.append(forward.pk)
            continue
        for name in names:
            reason = reasons.load_without_worker(plugin=name, queue=queue)
            try:
                plugin = services.plugin_mark_unavailable(
                    name=name, reason=reason, actor=request.actor
                )
            except IllegalTransition:  # runs in progress: they end first, as with a reload
                continue
            kept[name] = LoadReport(name, plugin.state, plugin.reason, plugin.source)
    return list(kept.values()), forwarded
