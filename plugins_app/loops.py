"""A daemon thread that does one job every few seconds, or at once when woken."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import connection

logger = logging.getLogger(__name__)


class BackgroundLoop:
    """Calls `work` every `interval_s()` seconds and on wake(); an error is logged, and the
    next turn tries again (the database may be down for a while)."""

    def __init__(self, name: str, work: Callable[[], object], interval_s: Callable[[], float]):
        self.name = name
        self._work = work
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Do the work now (starting the thread if it is not running)."""
        self.start()
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def turn(self) -> None:
        """One turn of the work, in the calling thread."""
        try:
            self._work()
        except Exception:
            logger.exception("%s failed; it tries again in its next turn", self.name)
            connection.close()
        else:
            # Kept for the next turn within CONN_MAX_AGE (a node's default), else closed.
            connection.close_if_unusable_or_obsolete()

    def _loop(self) -> None:
        stop = self._stop
        while not stop.is_set():
            self._wake.clear()
            self.turn()
            self._wake.wait(self._interval_s())
        connection.close()
