"""Starting host processes so that nothing they start outlives the portal process.

Runs in the portal. Hosts arm a parent-death signal, which Linux sends when the *thread*
that forked them ends, not the process: so every host is started from one long-lived
thread of this process, never from a request's or a pool's thread. Each host's
environment carries the mark ``SANDBOX_OWNER=<portal token>.<n>`` (sandbox/portal/leftovers.py),
and one janitor process per portal process kills whatever still carries the portal's mark
once the portal is gone, however it ended.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
from typing import Any

from sandbox.portal.leftovers import OWNER_VARIABLE, kill_orphaned, process_token

log = logging.getLogger("sandbox")

JANITOR_MODULE = "sandbox.portal.janitor"  # what the janitor runs, as `python -P -m ...`
# The directory that holds the sandbox package (this file is sandbox/portal/spawn.py): hosts
# and the janitor import the sandbox from there.
SANDBOX_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Spawner:
    """One portal process's host starter: a daemon thread, the mark, and the janitor."""

    def __init__(self, python: str, tmp_dir: str) -> None:
        self.pid = os.getpid()
        self.token = process_token()
        self._numbers = itertools.count(1)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._janitor = self._start_janitor(python, tmp_dir)
        leftovers = kill_orphaned()
        if leftovers:
            log.warning(
                "sandbox: killed %d processes left by plugins of portals that are gone: %s",
                len(leftovers),
                leftovers[:20],
            )
        threading.Thread(target=self._serve, name="sandbox-spawner", daemon=True).start()

    def mark(self) -> str:
        """A new host's mark (its environment's SANDBOX_OWNER)."""
        return f"{self.token}.{next(self._numbers)}"

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        """subprocess.Popen(args, **kwargs), run on the spawner thread."""
        done = threading.Event()
        box: dict[str, Any] = {}
        self._requests.put((args, kwargs, box, done))
        done.wait()
        if "error" in box:
            raise box["error"]
        return box["proc"]

    def _serve(self) -> None:
        while True:
            args, kwargs, box, done = self._requests.get()
            try:
                box["proc"] = subprocess.Popen(args, **kwargs)
            except BaseException as exc:  # handed to the caller, who reports it
                box["error"] = exc
            done.set()

    def _start_janitor(self, python: str, tmp_dir: str) -> subprocess.Popen | None:
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": SANDBOX_ROOT}
        try:
            # Not from the spawner thread and without a death signal: it must outlive us.
            return subprocess.Popen(
                [python, "-P", "-m", JANITOR_MODULE, "--owner", self.token, "--tmp", tmp_dir],
                stdin=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning(
                "sandbox: no janitor (%s): processes plugins start may outlive a killed portal",
                exc,
            )
            return None

    def forget(self) -> None:
        """In a forked copy of the portal: the janitor's pipe is the parent's to hold."""
        if self._janitor is not None and self._janitor.stdin is not None:
            with contextlib.suppress(OSError):
                os.close(self._janitor.stdin.fileno())
            self._janitor.returncode = 0  # not our child: keep Popen from waiting on it


_SPAWNER: Spawner | None = None
_LOCK = threading.Lock()


def spawner(python: str = sys.executable, tmp_dir: str = "/tmp") -> Spawner:
    """This process's spawner, started on first use (again after a fork)."""
    global _SPAWNER
    current = _SPAWNER
    if current is not None and current.pid == os.getpid():
        return current
    with _LOCK:
        if _SPAWNER is not None and _SPAWNER.pid != os.getpid():
            _SPAWNER.forget()
            _SPAWNER = None
        if _SPAWNER is None:
            _SPAWNER = Spawner(python, tmp_dir)
        return _SPAWNER


def _after_fork_in_child() -> None:
    global _LOCK, _SPAWNER
    _LOCK = threading.Lock()  # the parent's may have been held by another thread
    if _SPAWNER is not None:  # else the parent's janitor would wait for us too
        _SPAWNER.forget()
        _SPAWNER = None


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["OWNER_VARIABLE", "SANDBOX_ROOT", "Spawner", "spawner"]
