"""A process's /proc files, opened once and re-read with pread(): a fresh open costs ~0.1 ms
on the path that answers a call."""

from __future__ import annotations

import contextlib
import os

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the zygote's imports stay light
if TYPE_CHECKING:
    from collections.abc import Callable

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class ProcFiles:
    """The children and stat files of one process (its main thread's children)."""

    __slots__ = ("children_fd", "stat_fd")

    def __init__(self, pid: int) -> None:
        self.children_fd: int | None = None
        self.stat_fd: int | None = None
        try:
            self.children_fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY)
            self.stat_fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        except OSError:  # no /proc or no CONFIG_PROC_CHILDREN: callers take the slow path
            self.close()

    def children(self) -> list[int] | None:
        """Children of the main thread, or None if unknown."""
        if self.children_fd is None:
            return None
        try:
            return [int(p) for p in os.pread(self.children_fd, 1 << 16, 0).split()]
        except OSError:
            return None

    def _stat(self) -> list[bytes] | None:
        """/proc/PID/stat from field 3 (state) on: what follows the ")" ending the name."""
        if self.stat_fd is None:
            return None
        try:
            stat = os.pread(self.stat_fd, 4096, 0)
        except OSError:
            return None
        return stat[stat.rfind(b")") + 2 :].split()

    def rss_kb(self) -> int | None:
        """Resident memory in KiB (field 24 of stat), or None if the process is gone."""
        fields = self._stat()
        return None if fields is None else int(fields[21]) * PAGE_KB

    def cpu_ticks(self) -> int | None:
        """CPU time in clock ticks: its own and its waited-for children's (fields 14-17 of
        stat: utime, stime, cutime, cstime), or None if the process is gone."""
        fields = self._stat()
        return None if fields is None else sum(int(tick) for tick in fields[11:15])

    def single_threaded(self) -> bool:
        fields = self._stat()
        return fields is not None and fields[17] == b"1"  # field 20: num_threads

    def waiting(self) -> bool:
        """Asleep (a spare blocked reading its command), as opposed to still getting ready."""
        fields = self._stat()
        return fields is None or fields[0] == b"S"

    def close(self) -> None:
        for fd in (self.children_fd, self.stat_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.children_fd = self.stat_fd = None


def tree_rss_kb(root: ProcFiles, root_pid: int) -> tuple[int, list[int]] | None:
    """Resident memory of a process and of its descendants (children of each one's main
    thread), summed, in KiB, and their pids; None when the root is gone. A descendant that
    ends while it is read counts as nothing. Pages the processes share (a fork's) count in
    each: see ``tree_pss_kb``."""
    summed = _tree_sum(root, ProcFiles.rss_kb)
    return None if summed is None else (summed[0], [root_pid, *summed[1]])


def tree_cpu_ticks(root: ProcFiles) -> int | None:
    """CPU time of a process and of its live descendants (with what their waited-for children
    used), summed, in clock ticks; None when the root is gone."""
    summed = _tree_sum(root, ProcFiles.cpu_ticks)
    return None if summed is None else summed[0]


def _tree_sum(
    root: ProcFiles, read: Callable[[ProcFiles], int | None]
) -> tuple[int, list[int]] | None:
    """`read` of the root and of each descendant (TREE_LIMIT processes at most), summed, and
    the descendants' pids; None when the root is gone, nothing for one that ends meanwhile."""
    total = read(root)
    if total is None:
        return None
    descendants: list[int] = []
    pending = root.children() or []
    while pending and len(descendants) + 1 < TREE_LIMIT:
        pid = pending.pop()
        descendants.append(pid)
        child = ProcFiles(pid)
        try:
            total += read(child) or 0
            pending += child.children() or []
        finally:
            child.close()
    return total, descendants


def tree_pss_kb(pids: list[int]) -> int:
    """The proportional set size of these processes, summed, in KiB: shared pages count once
    among them (and with the host they were forked from). ~0.1-5 ms per process, so only
    read when the plain sum of their RSS is past a limit."""
    total = 0
    for pid in pids:
        with (
            contextlib.suppress(OSError, ValueError),
            open(f"/proc/{pid}/smaps_rollup", "rb") as rollup,
        ):
            for line in rollup:
                if line.startswith(b"Pss:"):
                    total += int(line.split()[1])
                    break
    return total


TREE_LIMIT = 4096  # processes read per sample: a fork bomb is the pids limit's job
