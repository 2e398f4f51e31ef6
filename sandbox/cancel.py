"""CancelToken: how a caller stops a sandboxed call in flight, from any thread.

    token = CancelToken()
    result = run_plugin_sandboxed("pkg.mod:run", limits=..., cancel=token)  # on one thread
    token.cancel()                                                       # on another

A call whose token is cancelled before it starts never starts; one in flight has its
process group killed by its host (and whatever escaped the group swept), and its result's
outcome is ``cancelled``. The host and the other calls it runs go on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["CancelToken"]


class CancelToken:
    """Set once, from any thread; a call in flight registers what stops it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._hooks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Stop the call (now, or before it starts); later calls change nothing."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:  # outside the lock: a hook writes to a socket
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook`` at the cancel (at once when it came already); returns what forgets it."""
        with self._lock:
            if not self._cancelled:
                self._hooks.append(hook)
                return lambda: self._forget(hook)
        hook()
        return lambda: None

    def _forget(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)
