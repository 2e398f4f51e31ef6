"""gunicorn server hooks (gunicorn.conf.py): a worker's SIGTERM hands its queued runs back.

gunicorn's gthread worker answers SIGTERM by finishing the requests in flight and exiting, but
the thread executor's pool would go on starting queued runs until the arbiter's SIGKILL at the
end of graceful_timeout cut them as INTERRUPTED. So at SIGTERM (and SIGINT/SIGQUIT) the
executor stops starting runs at once, the runs going finish while the worker exits, and the
runs not started stay QUEUED for a live process to adopt after the stale limit.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any


def post_worker_init(worker: Any) -> None:
    """Chain our SIGTERM handler before gunicorn's (which only stops the worker's loop)."""
    # Imported here, not in the handler: a handler must not wait for the import lock.
    from plugins_app.background import stop_taking_runs

    graceful_exit = signal.getsignal(signal.SIGTERM)

    def stop_then_exit(signum: int, frame: FrameType | None) -> None:
        stop_taking_runs()
        if callable(graceful_exit):
            graceful_exit(signum, frame)

    signal.signal(signal.SIGTERM, stop_then_exit)
    # As gunicorn's own: a SIGTERM must not break the system calls of requests in flight.
    signal.siginterrupt(signal.SIGTERM, False)


def worker_int(worker: Any) -> None:
    """SIGINT/SIGQUIT (a quick exit): start no more runs either."""
    from plugins_app.background import stop_taking_runs

    stop_taking_runs()


def worker_exit(server: Any, worker: Any) -> None:
    """The worker's loop ended: let the runs going finish (the arbiter's graceful_timeout
    bounds the wait), starting no other."""
    if not getattr(worker, "booted", False):
        return  # the application never loaded: no run can be here
    from plugins_app.background import finish_runs_in_progress

    finish_runs_in_progress()
