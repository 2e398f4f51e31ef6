"""A daemon thread that does one job every few seconds, or at once when woken; and the idle
clock of threads that end once unused for a while."""

from __future__ import annotations

import logging
import threading
import time
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


class Linger:
    """How long a thread has had nothing to do: over once idle for `linger_s` in a row."""

    def __init__(self, linger_s: float) -> None:
        self.linger_s = linger_s
        self._idle_since: float | None = None

    def over(self, *, busy: bool) -> bool:
        now = time.monotonic()
        if busy or self._idle_since is None:
            self._idle_since = None if busy else now
            return False
        return now - self._idle_since >= self.linger_s
