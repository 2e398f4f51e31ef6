"""Ending processes: reaping the host's children, killing a call's process group, and
sweeping processes that escaped their group (the host is a child subreaper, so they are
reparented to it)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from sandbox.zygote import linux
from sandbox.zygote.proc import ProcFiles

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: kept out of the host, whose size slows every fork
    import collections
    from collections.abc import Callable

    from sandbox.zygote.calls import Call
    from sandbox.zygote.spares import SparePool

CLEANUP_BUDGET_S = 2.0  # longest a finished call may block the loop killing its leftovers


class Reaper:
    """Reaps the host's children and kills what no running call owns.

    ``calls`` (by pid) and ``finished`` are the host's: a reaped call is appended to
    ``finished`` for the loop to complete. ``own_children`` are processes a Preload warm-up
    started on purpose, left alone.
    """

    def __init__(
        self,
        host_pid: int,
        calls: dict[int, Call],
        finished: collections.deque[Call],
        spares: SparePool,
        log: Callable[[str], None],
    ) -> None:
        self.host_pid = host_pid
        self.calls = calls
        self.finished = finished
        self.spares = spares
        self.log = log
        self.own_children: set[int] = set()
        self.sweep_pending = False  # escaped processes may be left: sweep from the loop
        self.children_of = (
            linux.children_of if linux.children_file_supported() else linux.children_by_scan
        )
        self.proc = ProcFiles(host_pid)

    def reap(self) -> None:
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            call = self.calls.get(pid)
            if call is not None and call.status is None:
                call.status, call.rusage = status, rusage
                self.finished.append(call)
            elif pid in self.spares.by_pid:  # died while idle (killed from outside?)
                self.log(f"spare call process {pid} died while idle; replacing it")
                self.spares.retire(self.spares.by_pid[pid], reaped=True)
            else:
                self.sweep_pending = True  # an escaped descendant died; its children are ours

    def sweep(self, budget_s: float) -> None:
        """Kill processes reparented to us that no running call owns."""
        give_up = time.monotonic() + budget_s
        while True:
            killed = self._kill_escaped()
            self.reap()
            if not killed:
                self.sweep_pending = False
                return
            if time.monotonic() >= give_up:
                self.sweep_pending = True  # keep sweeping from the loop
                return
            time.sleep(0.001)

    def _kill_escaped(self) -> int:
        running = {c.pid for c in self.calls.values() if c.status is None}
        spares = self.spares.by_pid
        killed = 0
        for pid in self.children_of(self.host_pid):
            if pid in running or pid in self.own_children or pid in spares:
                continue
            try:
                if os.getpgid(pid) in running:
                    continue  # a running call's own process, orphaned inside its group
            except ProcessLookupError:
                continue
            kill(pid, signal.SIGKILL)
            killed += 1
        return killed

    def only_known_children(self) -> bool:
        """Whether every child of ours is a call process, a spare or a warm-up's own."""
        ours = self.proc.children()  # the main thread's: orphans are reparented to it
        if ours is None:
            return False
        spares = self.spares.by_pid
        return all(pid in self.calls or pid in spares or pid in self.own_children for pid in ours)

    def kill_all_calls(self) -> None:
        for call in self.calls.values():
            self.kill_group(call.pid, wait=False)

    def cancel(self, call_id: int) -> None:
        """The portal cancelled a call: kill its group now (one answered or gone: nothing).
        Its answer says so once it is reaped; what escaped the group is swept then."""
        for call in self.calls.values():
            if call.call_id == call_id and call.status is None and not call.answered:
                call.cancelled = True
                self.kill_group(call.pid, wait=False)

    def kill_group(self, pgid: int, wait: bool = True) -> None:
        """SIGKILL the call's process group; with ``wait``, until no member is left."""
        if not wait:
            kill(pgid, signal.SIGKILL)  # the running leader, in case it left its group
        give_up = time.monotonic() + CLEANUP_BUDGET_S
        while True:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return
            except PermissionError:
                return  # pgid reused by a process we do not own: it is not ours any more
            if not wait:
                return
            self.reap()  # members orphaned by the kill are our (zombie) children now
            if time.monotonic() > give_up:
                self.log(f"process group {pgid} survived SIGKILL for {CLEANUP_BUDGET_S}s")
                self.sweep_pending = True
                return
            time.sleep(0.001)


def kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)
