"""SIGTERM and Ctrl-C as a stop that a foreground command's loop waits on.

The handler takes no lock: it sets a flag and writes a byte to a pipe the wait selects on. A
handler that set a threading.Event instead could land while the same thread held that Event's
lock inside its wait, and block on it for ever (a runscheduler did not stop on SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterable


class StopSignals:
    """Set once one of `signals` arrives; `wait` ends as soon as it is."""

    def __init__(self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)):
        self._requested = False
        self._read_fd, self._write_fd = os.pipe()  # not inherited by the processes it starts
        os.set_blocking(self._write_fd, False)
        for signum in signals:
            signal.signal(signum, self._on_signal)

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
            select.select([self._read_fd], [], [], timeout_s)
        return self._requested

    def close(self) -> None:
        os.close(self._read_fd)
        os.close(self._write_fd)
