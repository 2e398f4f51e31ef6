"""A worker node's life: registered at start, reconciling once, heartbeating (its runs, its
Worker row, everyone's stale runs, the due retries of its queues), and marked stopped with its
warm hosts gone at the end."""

from __future__ import annotations

import glob
import logging
import os
import platform
import shutil
import socket
import sys
from collections.abc import Mapping
from typing import Any

from django.utils import timezone
from kombu.exceptions import OperationalError

from plugins_app import services
from plugins_app.executor import heartbeat, reconcile_interrupted, set_node_name
from plugins_app.fleet.executor import CeleryExecutor
from plugins_app.fleet.queues import queue_of
from plugins_app.models import PluginRun
from plugins_app.services import retries
from plugins_app.warm_hosts import discard_warm_hosts

logger = logging.getLogger(__name__)

# A node's pool threads run task after task: one connection each, not a new one for every run.
NODE_CONN_MAX_AGE_S = 60


def keep_database_connections(
    database: dict[str, Any], *, environ: Mapping[str, str] = os.environ
) -> None:
    """Make `database` (a DATABASES entry) keep connections between tasks, unless the operator
    chose CONN_MAX_AGE (settings check a kept connection before each reuse)."""
    if "CONN_MAX_AGE" not in environ:
        database["CONN_MAX_AGE"] = NODE_CONN_MAX_AGE_S


def node_environment() -> services.NodeEnvironment:
    """This node's Python, platform and GPU presence (driver devices, not a torch import)."""
    gpu = bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None
    return services.NodeEnvironment(
        host=socket.gethostname(),
        pid=os.getpid(),
        python_version=platform.python_version(),
        platform=f"{platform.system()} {platform.release()} {platform.machine()} ({sys.platform})",
        gpu=gpu,
    )


class WorkerNode:
    """The registry side of `manage.py runworker`; Celery's worker does the consuming."""

    def __init__(self, *, name: str, queues: list[str], concurrency: int) -> None:
        self.name = name
        self.queues = queues
        self.concurrency = concurrency
        self.executor = CeleryExecutor()  # retries go back through the broker, to any node

    def start(self) -> None:
        set_node_name(self.name)
        self.register()
        try:
            reconcile_interrupted()  # runs of a node that died while none was running
        except Exception:
            logger.exception("Reconciling interrupted runs failed; the heartbeat retries")
        heartbeat().add_sweep(self.beat)
        heartbeat().start()

    def register(self) -> None:
        services.worker_register(
            name=self.name,
            queues=self.queues,
            concurrency=self.concurrency,
            environment=node_environment(),
        )

    def beat(self) -> None:
        in_flight = len(heartbeat().run_ids)
        if not services.worker_heartbeat(name=self.name, runs_in_flight=in_flight):
            self.register()  # its row was deleted (pruned by hand): the node is still here
        self.dispatch_due_retries()

    def dispatch_due_retries(self) -> list[int]:
        """Send the retries whose backoff ended, of plugins routed to this node's queues, each
        by the one node that claims its send; a send the broker refuses waits for the next
        heartbeat. Returns the runs sent."""
        now = timezone.now()
        due = PluginRun.objects.filter(pk__in=retries.due_run_ids(now=now, queues=self.queues))
        sent = []
        for run in due.select_related("plugin").order_by("not_before", "pk"):
            if not retries.claim_send(run.pk, now=now):
                continue  # another node sent it: it waits in the queue for a free thread
            queue = queue_of(run.plugin)
            try:
                self.executor.send(run.pk, queue)
            except OperationalError as error:
                retries.release_send(run.pk)
                logger.warning(
                    "Sending due retry %s to queue %s failed (%s); the next heartbeat tries again",
                    run.pk,
                    queue,
                    error,
                )
                continue
            sent.append(run.pk)
        return sent

    def stop(self) -> None:
        heartbeat().remove_sweep(self.beat)
        heartbeat().stop()
        discard_warm_hosts()
        services.worker_stopped(name=self.name)
