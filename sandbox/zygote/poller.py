"""The host's one epoll set, with a handler per file descriptor."""

from __future__ import annotations

import contextlib
import select

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: kept out of the host, whose size slows every fork
    from collections.abc import Callable

IN = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR


class Poller:
    """epoll, and who handles each fd's events (a handler gets the event mask)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}

    def watch(self, fd: int, events: int, handler: Callable[[int], None]) -> None:
        self.epoll.register(fd, events)
        self.handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        self.handlers.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.epoll.unregister(fd)

    def modify(self, fd: int, events: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.epoll.modify(fd, events)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        """Wait up to ``timeout`` seconds (-1: no limit), then run the handlers of what is
        ready; the (fd, events) pairs that were ready."""
        ready = self.epoll.poll(timeout)
        for fd, events in ready:
            handler = self.handlers.get(fd)
            if handler is not None:  # None: closed by an earlier handler in this batch
                handler(events)
        return ready


def wake_only(_events: int) -> None:
    """The handler of a pidfd: its event only wakes the loop, which then reaps."""
