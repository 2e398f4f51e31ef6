"""SIGTERM and Ctrl-C as a stop that a foreground command's loop waits on.

The handler takes no lock: it sets a flag and writes a byte to a pipe the wait polls. A
handler that set a threading.Event instead could land while the same thread held that Event's
lock inside its wait, and block on it for ever (a runscheduler did not stop on SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterable
from typing import Any


class StopSignals:
    """Set once one of `signals` arrives; `wait` ends as soon as it is. Used as a context
    manager, the former handlers come back at the end."""

    def __init__(self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)):
        self._requested = False
        self._read_fd, self._write_fd = os.pipe()  # not inherited by the processes it starts
        os.set_blocking(self._write_fd, False)
        self._poll = select.poll()
        self._poll.register(self._read_fd, select.POLLIN)
        self._former: dict[signal.Signals, Any] = {}
        try:
            for signum in signals:
                self._former[signum] = signal.signal(signum, self._on_signal)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> StopSignals:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._requested = True
        # A pipe full of earlier signals wakes the wait anyway.
        with contextlib.suppress(BlockingIOError):
            os.write(self._write_fd, b"\0")

    def is_set(self) -> bool:
        return self._requested

    def wait(self, timeout_s: float) -> bool:
        """True once a stop was asked for, at once if it was before; else False after timeout_s."""
        if not self._requested:
            self._poll.poll(max(0, round(timeout_s * 1000)))
        return self._requested

    def close(self) -> None:
        """The former handlers back first, so no signal writes to a closed pipe."""
        for signum, former in self._former.items():
            signal.signal(signum, former)
        self._former.clear()
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
