"""The tasks a worker node runs: a run id, executed only if this worker wins its claim; and
a load request, answered once.

A run starts only by the conditional claim in services.run_start (QUEUED to RUNNING once,
attempts counted): a redelivered or duplicated message finds it started or finished and does
nothing. The run's outcome is recorded by the runner, as with the thread executor.
"""

from __future__ import annotations

import logging

from django.db import close_old_connections

from plugins_app import services
from plugins_app.errors import RunNotFound
from plugins_app.fleet.celery_app import EXECUTE_RUN_TASK, LOAD_PLUGINS_TASK, celery_app
from plugins_app.fleet.loads import MAX_LOAD_DELIVERIES, load_outcome, load_refused_as_poison
from plugins_app.models import LoadRequest
from plugins_app.runner import execute_run

logger = logging.getLogger(__name__)


@celery_app().task(name=EXECUTE_RUN_TASK)
def execute_run_task(run_id: int) -> None:
    """Execute run `run_id` in this worker's sandbox (nothing when another claimed it)."""
    close_old_connections()
    try:
        execute_run(run_id)
    except RunNotFound:
        logger.warning("Run %s was deleted before a worker took it; nothing to do", run_id)
    finally:
        # Kept for the thread's next task within CONN_MAX_AGE (a node's default), else closed.
        close_old_connections()


@celery_app().task(name=LOAD_PLUGINS_TASK)
def load_plugins_task(request_id: int) -> None:
    """Load the plugins a LoadRequest names in this node's sandbox and write back how it went
    (nothing when a redelivered message finds it answered)."""
    close_old_connections()
    try:
        delivery = services.load_request_claim(request_id=request_id)
        if delivery is None:
            return
        request = LoadRequest.objects.get(pk=request_id)
        if delivery > MAX_LOAD_DELIVERIES:
            # Every earlier delivery lost its node mid-load: a poison plugin, never loaded again.
            outcome = load_refused_as_poison(request, tried=delivery - 1)
        else:
            outcome = load_outcome(request)
        services.load_request_finish(request_id=request_id, outcome=outcome)
    finally:
        close_old_connections()
