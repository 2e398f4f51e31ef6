"""The Celery application of the celery executor and its delivery settings.

The broker only delivers run ids; the database decides what runs (tasks.py). A message is
acknowledged after its run finished (acks_late), goes back to the queue when its worker
process is lost (reject_on_worker_lost), and a worker takes one at a time per thread
(prefetch 1). Unacknowledged messages must outlive the longest plugin call, or the broker
would redeliver a run still going: CONSUMER_TIMEOUT_S exceeds the largest timeout a plugin
may declare.
"""

from __future__ import annotations

import functools

from celery import Celery
from django.conf import settings
from kombu import Queue

from plugins_app.fleet.queues import DEFAULT_QUEUE
from sandbox.limits import MAXIMA

EXECUTE_RUN_TASK = "portal.execute_run"
LOAD_PLUGINS_TASK = "portal.load_plugins"
# Longer than any plugin call may last (MAXIMA: 7 days), plus an hour of slack.
CONSUMER_TIMEOUT_S = MAXIMA["timeout_s"] + 3600


def portal_queue(name: str) -> Queue:
    """A run queue as both the sender and the workers declare it (same arguments, always)."""
    return Queue(name, routing_key=name, durable=True)


@functools.cache
def celery_app() -> Celery:
    """The one Celery app of this process, configured from the Django settings."""
    # Without Celery's Django fix-up, which closes every connection before and after each
    # task: the tasks close theirs as Django does after a request (tasks.py), so a node's
    # threads keep them within CONN_MAX_AGE. runworker runs under manage.py: Django is set up.
    app = Celery("portal", set_as_current=True, fixups=[])
    app.conf.update(
        broker_url=settings.PORTAL_BROKER_URL,
        broker_connection_retry_on_startup=True,
        # Redis (and SQS) redeliver an unacknowledged message after this many seconds.
        broker_transport_options={"visibility_timeout": CONSUMER_TIMEOUT_S},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=DEFAULT_QUEUE,
        task_create_missing_queues=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # One message is one run; never a burst of connections for a send (web processes).
        broker_pool_limit=4,
        # A request waits at most about a second for an unreachable broker, then says so.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.3},
        broker_connection_timeout=2,
    )
    app.autodiscover_tasks(["plugins_app.fleet"], force=True)
    return app
