"""Plugin targets for the resident-memory limit (memory_mb): address space, RSS, trees."""

from __future__ import annotations

import mmap
import os
import time

MiB = 1024 * 1024


def map_large_touch_little(map_mb: int, touch_mb: int) -> dict:
    """Reserve ``map_mb`` of address space (as CUDA and torch do), make ``touch_mb`` of it
    resident, and report both."""
    region = mmap.mmap(-1, map_mb * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, touch_mb * MiB, mmap.PAGESIZE):
        region[offset] = 1
    time.sleep(0.2)  # long enough for the host to sample it
    return {"mapped_mb": map_mb, "touched_mb": touch_mb}


def child_hoards(hoard_mb: int) -> str:
    """A child process holds ``hoard_mb`` resident while this one stays small."""
    pid = os.fork()
    if pid == 0:
        hoard = bytearray(hoard_mb * MiB)
        hoard[:: mmap.PAGESIZE] = b"\1" * len(range(0, len(hoard), mmap.PAGESIZE))
        time.sleep(30)
        os._exit(0)
    os.waitpid(pid, 0)
    return "the child ended"
