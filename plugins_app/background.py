"""The portal's background loops, the scheduler and the webhook deliverer: started by each web
process (portal/wsgi.py, portal/asgi.py) and by `manage.py runscheduler`."""

from __future__ import annotations

import threading

from django.conf import settings

from plugins_app.executor import shutdown_executor
from plugins_app.notifications.deliverer import deliverer_loop
from plugins_app.schedules.scheduler import scheduler_loop


def start_web_process_loops() -> None:
    """Deliver webhooks from this process; schedule too unless PORTAL_SCHEDULER=off."""
    if settings.PORTAL_SCHEDULER == "thread":
        scheduler_loop.start()
    deliverer_loop.start()


def run_scheduler_until(stop: threading.Event, *, tick_s: float | None = None) -> None:
    """The scheduler in this thread until `stop` is set, with the deliverer beside it; then
    waits for the runs it queued in this process to finish."""
    deliverer_loop.start()
    try:
        while not stop.is_set():
            scheduler_loop.turn()
            stop.wait(settings.PORTAL_SCHEDULER_TICK_S if tick_s is None else tick_s)
    finally:
        deliverer_loop.stop()
        shutdown_executor(wait=True)
