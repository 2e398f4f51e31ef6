"""How the process running a run learns that it was cancelled, wherever the cancel came from.

The cancel is a row: services.run_cancel finishes the run CANCELLED in the database, from any
web process, admin or command, on any machine. While this process runs calls, one daemon
thread reads the status of its running runs every CANCEL_POLL_S (one indexed query for all of
them) and cancels the sandbox call of each that ended meanwhile: its host kills the call's
process group. With no call running for CANCEL_WATCH_LINGER_S, the thread ends and holds no
connection (kept that long, runs in a row share one thread and one connection).

    execute_run ──watching(run_id)──► CancelToken ──► run_plugin_sandboxed(..., cancel=token)
                                          ▲
    poll thread ── runs of ours no longer RUNNING? ──┘ token.cancel()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from plugins_app.loops import Linger
from plugins_app.models import PluginRun, RunStatus
from sandbox import CancelToken

logger = logging.getLogger(__name__)

CANCEL_POLL_S = 0.5  # a cancelled call's processes die within this (plus the kill) of a cancel
CANCEL_WATCH_LINGER_S = 10.0


class CancelWatch:
    """The tokens of this process's running calls, and the thread that polls their rows."""

    def __init__(self, poll_s: float = CANCEL_POLL_S, linger_s: float = CANCEL_WATCH_LINGER_S):
        self.poll_s = poll_s
        self.linger_s = linger_s
        self._tokens: dict[int, CancelToken] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def poll_thread(self) -> threading.Thread | None:
        """The polling thread while there is one."""
        return self._thread

    @contextmanager
    def watching(self, run_id: int) -> Iterator[CancelToken]:
        """A token cancelled once run `run_id` is no longer RUNNING, while the block runs."""
        token = CancelToken()
        with self._lock:
            self._tokens[run_id] = token
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._loop, args=(self._stop,), name="portal-cancel-watch", daemon=True
                )
                self._thread.start()
        try:
            yield token
        finally:
            with self._lock:
                self._tokens.pop(run_id, None)

    def poll(self) -> list[int]:
        """Cancel the calls of the watched runs that ended elsewhere; their ids."""
        with self._lock:
            watched = dict(self._tokens)
        if not watched:
            return []
        ended = list(
            PluginRun.objects.filter(pk__in=list(watched))
            .exclude(status=RunStatus.RUNNING)
            .values_list("pk", flat=True)
        )
        with self._lock:  # a call that ended meanwhile is finished by its own process
            ended = [run_id for run_id in ended if self._tokens.get(run_id) is watched[run_id]]
        for run_id in ended:
            logger.info("Run %s ended elsewhere (cancelled): stopping its call", run_id)
            watched[run_id].cancel()
        return ended

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the polling thread now (its connection closed), whatever it watches."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None:
            thread.join(timeout_s)

    def _loop(self, stop: threading.Event) -> None:
        linger = Linger(self.linger_s)
        try:
            while not stop.is_set():
                with self._lock:
                    if linger.over(busy=bool(self._tokens)):
                        if self._thread is threading.current_thread():
                            self._thread = None  # a later watching() starts a new one
                        return
                try:
                    self.poll()
                except Exception:
                    # The database may be away for a while; the next poll tries again.
                    logger.exception("Polling for cancelled runs failed; retrying")
                    connection.close()
                stop.wait(self.poll_s)
        finally:
            connection.close()


_watch = CancelWatch()


def cancel_watch() -> CancelWatch:
    return _watch
