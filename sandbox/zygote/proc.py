"""A process's /proc files, opened once and re-read with pread(): a fresh open costs ~0.1 ms
on the path that answers a call."""

from __future__ import annotations

import contextlib
import os


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
