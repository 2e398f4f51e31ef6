"""A running call as its host sees it: the call process, its pipes, its deadline, its disk
budget and what it has said so far."""

from __future__ import annotations

import time

from sandbox.zygote.child import MiB
from sandbox.zygote.disk import DiskScan, tree_size
from sandbox.zygote.proc import tree_pss_kb, tree_rss_kb
from sandbox.zygote.protocol import ENVELOPE_LIMIT

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: kept out of the host, whose size slows every fork
    import resource

    from sandbox.zygote.proc import ProcFiles

# A running call's working directory is measured every DISK_CHECK_S, DISK_STEP_ENTRIES
# entries at a time (~2 ms), DISK_STEP_S apart: a tree of a million files delays other calls
# by one step, not by a whole walk.
DISK_CHECK_S = 0.05
DISK_STEP_ENTRIES = 1000
DISK_STEP_S = 0.02
# A call with memory_mb has its process tree's resident memory read this often (from /proc):
# none during a call shorter than that, ~10 us per process in the tree after.
MEMORY_CHECK_S = 0.02
# When the plain RSS sum is past memory_mb but the shared pages counted once are not (a tree
# of forks), the next look is this much later: counting them costs ~0.1-5 ms per process.
MEMORY_RECHECK_S = 0.25


class Tail:
    """Keeps only the last ``cap`` bytes of a stream; counts the rest."""

    __slots__ = ("buffer", "cap", "total")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buffer = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.buffer += data
        if len(self.buffer) > 2 * self.cap:  # trim in batches: O(n) per trim, rarely
            del self.buffer[: -self.cap]

    def value(self) -> bytes:
        return bytes(self.buffer[-self.cap :]) if self.cap else b""


class Call:
    """One running call: its child, pipes, deadline and what it has said so far."""

    __slots__ = (
        "answered",
        "call_id",
        "calldir",
        "cancelled",
        "cgroup",
        "deadline",
        "disk_cap",
        "disk_check_at",
        "disk_exceeded",
        "disk_scan",
        "disk_used",
        "fds",
        "memory_cap_kb",
        "memory_check_at",
        "memory_exceeded",
        "memory_peak_kb",
        "pid",
        "pidfd",
        "proc",
        "result",
        "result_cap",
        "result_overflow",
        "rusage",
        "started",
        "status",
        "stderr",
        "stdout",
        "timed_out",
    )

    def __init__(self, call_id: int, pid: int, calldir: str, limits: dict, fds: dict) -> None:
        self.call_id = call_id
        self.pid = pid
        self.calldir = calldir
        self.fds = fds  # "stdout" / "stderr" / "result" -> our read end
        self.started = time.monotonic()
        self.deadline = self.started + float(limits["timeout_s"])
        disk_mb = limits.get("disk_mb")
        self.disk_cap = int(disk_mb * MiB) if disk_mb else None  # bytes; None: no budget
        # When to measure the working directory next; None once there is nothing to watch.
        self.disk_check_at = self.started + DISK_CHECK_S if disk_mb else None
        self.disk_scan: DiskScan | None = None
        self.disk_used: int | None = None
        self.disk_exceeded = False
        memory_mb = limits.get("memory_mb")
        self.cgroup: str | None = None  # its own cgroup v2 with memory.max, if the kernel limits
        self.memory_cap_kb = int(memory_mb * 1024) if memory_mb else None
        self.memory_check_at = self.started + MEMORY_CHECK_S if memory_mb else None
        self.memory_peak_kb: int | None = None  # of the tree, as sampled
        self.memory_exceeded = False
        self.result_cap = int(limits["result_bytes"]) + ENVELOPE_LIMIT
        self.stdout = Tail(int(limits["output_bytes"]))
        self.stderr = Tail(int(limits["output_bytes"]))
        self.result = bytearray()
        self.result_overflow = False
        self.answered = False  # the portal has its result; the process may still be exiting
        self.timed_out = False
        self.cancelled = False  # the portal cancelled it: its group was killed
        self.status: int | None = None
        self.rusage: resource.struct_rusage | None = None
        self.pidfd: int | None = None
        self.proc: ProcFiles | None = None

    def next_check_at(self) -> float | None:
        """When the host must next look at this call's disk or memory, if ever."""
        due = [at for at in (self.disk_check_at, self.memory_check_at) if at is not None]
        return min(due) if due else None

    def over_budget(self, now: float) -> bool:
        """Measure what is due; True when the call is past its disk or memory budget (its
        process group is to be killed)."""
        memory_due = self.memory_check_at is not None and now >= self.memory_check_at
        if memory_due and self.measure_memory(now):
            return True
        return (
            self.disk_check_at is not None
            and now >= self.disk_check_at
            and (self.measure_disk_step(now))
        )

    def measure_memory(self, now: float) -> bool:
        """Sample the tree's resident memory; True when it is past memory_mb."""
        assert self.memory_cap_kb is not None  # only calls with a limit are sampled
        sample = tree_rss_kb(self.proc, self.pid) if self.proc is not None else None
        if sample is None:  # gone, or no /proc: the answer's own figures stand
            self.memory_check_at = None
            return False
        used, pids = sample
        interval = MEMORY_CHECK_S
        if used > self.memory_cap_kb:
            used = tree_pss_kb(pids)  # pages shared by forks (and the host) counted once
            interval = MEMORY_RECHECK_S
        self.memory_peak_kb = max(used, self.memory_peak_kb or 0)
        if used > self.memory_cap_kb:
            self.memory_exceeded = True
            self.memory_check_at = None
            return True
        self.memory_check_at = now + interval
        return False

    def measure_disk_step(self, now: float) -> bool:
        """One step of measuring the working directory while the call runs; True when the
        call is past its budget (its process group is to be killed)."""
        assert self.disk_cap is not None  # only calls with a budget are measured
        if self.disk_scan is None:
            self.disk_scan = DiskScan(self.calldir)
        scan = self.disk_scan
        done = scan.step(DISK_STEP_ENTRIES)
        if scan.total > self.disk_cap:
            self._over_disk_budget(scan.total)
            return True
        if done:
            self.disk_used = scan.total
            scan.restart()
        self.disk_check_at = now + (DISK_CHECK_S if done else DISK_STEP_S)
        return False

    def measure_disk_at_end(self) -> None:
        """Measure the whole directory of a call that is done: what it wrote since the last
        look counts too. An empty directory costs one scandir."""
        if self.disk_cap is None or self.disk_exceeded:
            return
        if self.disk_scan is not None:
            self.disk_scan.close()
        self.disk_check_at = None
        used = tree_size(self.calldir)
        if used > self.disk_cap:
            self._over_disk_budget(used)
        else:
            self.disk_used = used

    def _over_disk_budget(self, used: int) -> None:
        self.disk_used = used
        self.disk_exceeded = True
        self.disk_check_at = None
        if self.disk_scan is not None:
            self.disk_scan.close()
