"""One thread per process that cuts a database socket whose statement outlived its deadline.

`statement_timeout` is enforced by the server, so a hung server (SIGSTOP, a frozen VM, a
network that drops without a reset) never sends the error: the kernel still ACKs, and a read
on an open connection waits forever. The watchdog shuts the socket down on the client side,
which makes the blocked read fail at once in the waiting thread.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Watch:
    deadline: float  # time.monotonic()
    fileno: int
    fired: bool = False


class Watchdog:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._watches: dict[int, Watch] = {}
        self._tokens = itertools.count()
        self._next_wake = float("inf")
        self._thread_pid: int | None = None
        os.register_at_fork(after_in_child=self._after_fork)

    @contextlib.contextmanager
    def watch(self, fileno: int, seconds: float) -> Iterator[Watch]:
        """Cut the socket `fileno` if the block is still running after `seconds`."""
        watch = Watch(deadline=time.monotonic() + seconds, fileno=fileno)
        token = next(self._tokens)
        with self._condition:
            self._ensure_thread()
            self._watches[token] = watch
            if watch.deadline < self._next_wake:
                self._condition.notify()  # only an earlier deadline needs the thread awake
        try:
            yield watch
        finally:
            with self._condition:
                self._watches.pop(token, None)

    def _ensure_thread(self) -> None:
        if self._thread_pid != os.getpid():
            self._thread_pid = os.getpid()
            threading.Thread(
                target=self._run, name="database-deadline-watchdog", daemon=True
            ).start()

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                for token, watch in list(self._watches.items()):
                    if watch.deadline <= now:
                        del self._watches[token]
                        watch.fired = True
                        _cut(watch.fileno)
                self._next_wake = min(
                    (watch.deadline for watch in self._watches.values()), default=float("inf")
                )
                timeout = None if self._next_wake == float("inf") else self._next_wake - now
                self._condition.wait(timeout)

    def _after_fork(self) -> None:
        # The thread and any waiter stayed in the parent; the child starts afresh.
        self._condition = threading.Condition()
        self._watches = {}
        self._next_wake = float("inf")
        self._thread_pid = None


def _cut(fileno: int) -> None:
    """Shut the socket down in both directions: reads and writes on it fail at once."""
    with contextlib.suppress(OSError):
        duplicate = socket.socket(fileno=os.dup(fileno))
        with duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)


watchdog = Watchdog()
