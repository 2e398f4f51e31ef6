"""The portal's background loops, the scheduler, the webhook deliverer and (thread executor) the
run heartbeat with its reconciler: started by each web process (portal/wsgi.py, portal/asgi.py),
the first two also by `manage.py runscheduler`; stopped on a gunicorn worker's SIGTERM
(gunicorn.conf.py, portal/gunicorn_hooks.py)."""

from __future__ import annotations

from typing import Protocol

from django.conf import settings

from plugins_app.executor import shutdown_executor, start_in_background, stop_starting_runs
from plugins_app.notifications.deliverer import deliverer_loop
from plugins_app.runner import execute_run
from plugins_app.schedules.scheduler import scheduler_loop


def start_web_process_loops() -> None:
    """Deliver webhooks from this process; schedule too unless PORTAL_SCHEDULER=off; with the
    thread executor, heartbeat and reconcile from now on, though nobody submits a run here."""
    if settings.PORTAL_SCHEDULER == "thread":
        scheduler_loop.start()
    deliverer_loop.start()
    start_in_background(execute_run)


def stop_taking_runs() -> None:
    """At SIGTERM, at once: start no more runs here (they stay QUEUED for a live process).
    Sets a flag only, so a signal handler may call it."""
    stop_starting_runs()


def finish_runs_in_progress() -> None:
    """At a web process's exit: the scheduler stops, no more runs start, and those running
    finish (the server's grace period bounds the wait); the heartbeat keeps them fresh."""
    stop_starting_runs()
    scheduler_loop.stop()
    shutdown_executor(wait=True)


class Stop(Protocol):
    """What ends a foreground loop: a threading.Event, or StopSignals (SIGTERM, Ctrl-C)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout_s: float, /) -> bool: ...


def run_scheduler_until(stop: Stop, *, tick_s: float | None = None) -> None:
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
