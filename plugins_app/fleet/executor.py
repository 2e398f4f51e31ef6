"""CeleryExecutor: a run id goes to its plugin's queue once the run's row is committed.

The web process or command that queues a run starts no sandbox host: the worker node that
takes the message runs it. A queue without a live worker keeps the message, so the run waits
QUEUED (not lost, not counted) until a worker for that queue starts.
"""

from __future__ import annotations

import logging

from django.db import transaction
from kombu.exceptions import OperationalError

from plugins_app import reasons, services
from plugins_app.fleet.celery_app import EXECUTE_RUN_TASK, celery_app, portal_queue
from plugins_app.fleet.queues import queue_of
from plugins_app.models import PluginRun

logger = logging.getLogger(__name__)


class CeleryExecutor:
    kind = "celery"  # runs execute on worker nodes, never in this process

    def submit(self, run_id: int) -> None:
        plugin = PluginRun.objects.select_related("plugin").get(pk=run_id).plugin
        queue = queue_of(plugin)
        # A worker reads the run from the database: it must be committed before the send.
        transaction.on_commit(lambda: self._send(run_id, plugin.name, queue))

    @staticmethod
    def send(run_id: int, queue: str) -> None:
        """Send run `run_id` to `queue` now; OperationalError when the broker refuses it."""
        celery_app().send_task(
            EXECUTE_RUN_TASK, args=[run_id], queue=portal_queue(queue), routing_key=queue
        )

    @classmethod
    def _send(cls, run_id: int, name: str, queue: str) -> None:
        try:
            cls.send(run_id, queue)
        except OperationalError as error:
            # No node would ever see it: close it, uncounted, rather than leave it QUEUED.
            logger.error("Sending run %s to queue %s failed: %s", run_id, queue, error)
            reason = reasons.broker_unreachable(
                plugin=name, what=f"Run {run_id}", problem=str(error)
            )
            services.run_refuse_queued(run_id=run_id, reason=reason)

    def shutdown(self, *, wait: bool = True) -> None:
        pass
