"""What a resident call may use of memory and CPU, sampled from /proc while it runs.

Runs in the portal, beside sandbox/portal/resident.py: a resident process serves many calls, so
neither RLIMIT_CPU (it would add up over its calls) nor the fork-mode host's watch applies. The
caller's thread samples the process tree between waits for the answer:

    memory   the tree's RSS every MEMORY_CHECK_S (shared pages counted once past the limit)
    cpu      the tree's utime+stime since the call started, first after cpu_s / cores (the
             tree cannot use more than that), then as the rest of cpu_s allows, at least
             MEMORY_CHECK_S apart; past cpu_s rounded up to whole seconds, as fork mode's
             RLIMIT_CPU is, the call's outcome is the CPU limit's
"""

from __future__ import annotations

import math
import os
import time

from sandbox.zygote.calls import MEMORY_CHECK_S, MEMORY_RECHECK_S
from sandbox.zygote.proc import ProcFiles, tree_cpu_ticks, tree_pss_kb, tree_rss_kb

__all__ = ["CpuWatch", "MemoryWatch", "next_wait"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc's CPU times are in these


class MemoryWatch:
    """The resident memory of a process tree, sampled as the fork-mode host samples a call's."""

    def __init__(self, files: ProcFiles, pid: int, memory_mb: int) -> None:
        self.files = files
        self.pid = pid
        self.cap_kb = memory_mb * 1024
        self.peak_kb = 0
        self.recheck_at = 0.0

    def next_check(self) -> float:
        return time.monotonic() + MEMORY_CHECK_S

    def exceeded(self) -> bool:
        sample = tree_rss_kb(self.files, self.pid)
        if sample is None:
            return False
        total, pids = sample
        if total <= self.cap_kb:
            self.peak_kb = max(self.peak_kb, total)
            return False
        if time.monotonic() < self.recheck_at:
            return False
        shared_once = tree_pss_kb(pids)  # pages shared among the tree count once
        self.peak_kb = max(self.peak_kb, shared_once)
        if shared_once > self.cap_kb:
            return True
        self.recheck_at = time.monotonic() + MEMORY_RECHECK_S
        return False


class CpuWatch:
    """The CPU time a process tree used since the call started (read when the watch is made)."""

    def __init__(self, files: ProcFiles, cpu_s: float) -> None:
        self.files = files
        self.cap_s = max(1, math.ceil(cpu_s))  # as fork mode's RLIMIT_CPU rounds it
        self.cores = len(os.sched_getaffinity(0)) or 1
        self.base = tree_cpu_ticks(files) or 0
        self.used_s: float | None = None  # None until sampled
        self.check_at = time.monotonic() + self.cap_s / self.cores

    def next_check(self) -> float:
        return self.check_at

    def exceeded(self) -> bool:
        now = time.monotonic()
        if now < self.check_at:
            return False
        ticks = tree_cpu_ticks(self.files)
        if ticks is None:
            return False
        self.used_s = max(0.0, (ticks - self.base) / CLOCK_TICKS)
        if self.used_s >= self.cap_s:
            return True
        # The tree uses at most one CPU second per core per second: no need to look sooner.
        self.check_at = now + max(MEMORY_CHECK_S, (self.cap_s - self.used_s) / self.cores)
        return False


def next_wait(deadline: float, *watches: MemoryWatch | CpuWatch | None) -> float:
    """How long to wait for the answer before the deadline or the next sample is due."""
    due = min([deadline] + [watch.next_check() for watch in watches if watch is not None])
    return max(0.0, due - time.monotonic())
