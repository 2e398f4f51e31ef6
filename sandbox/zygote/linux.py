"""Thin ctypes wrappers for the Linux process controls Python 3.11's os module lacks."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
# Resolved once at import (in the host): a symbol lookup in every forked child costs ~0.1 ms.
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int
_unshare = _libc.unshare
_unshare.argtypes = (ctypes.c_int,)
_unshare.restype = ctypes.c_int


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def release_free_memory() -> None:
    """Give the C heap's free pages back to the kernel (glibc malloc_trim; elsewhere no-op)."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies."""
    _check(_prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_process_name(name: str) -> None:
    """What ps/top show as the command (15 bytes): tells hosts, spares and calls apart."""
    try:
        # Same effect as prctl(PR_SET_NAME) for a single-threaded process, and in a forked
        # child it touches (copies) ~100 fewer memory pages than a ctypes call: ~0.3 ms.
        fd = os.open("/proc/self/comm", os.O_WRONLY)
        try:
            os.write(fd, name.encode()[:15])
        finally:
            os.close(fd)
    except OSError:  # no /proc
        buffer = ctypes.create_string_buffer(name.encode()[:15])
        _check(_prctl(PR_SET_NAME, ctypes.addressof(buffer), 0, 0, 0), "prctl(PR_SET_NAME)")


def become_child_subreaper() -> None:
    """Orphaned descendants (even setsid ones) are reparented to us instead of init."""
    _check(_prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def signal_description(signum: int) -> str:
    return signal.strsignal(signum) or signal_name(signum)


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads), from /proc."""
    pids: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return pids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                pids.extend(int(p) for p in handle.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # thread exited meanwhile
    return pids


def children_file_supported() -> bool:
    pid = os.getpid()
    return os.path.exists(f"/proc/{pid}/task/{pid}/children")


def children_by_scan(pid: int) -> list[int]:
    """Slow fallback for kernels without CONFIG_PROC_CHILDREN: scan /proc/*/stat."""
    pids: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # Field 4 (ppid) follows the ")" that ends the command name, which may contain spaces.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            pids.append(int(name))
    return pids


def address_space_mb() -> float:
    """This process's virtual size (what RLIMIT_AS counts), in MiB."""
    with open("/proc/self/statm", "rb") as handle:
        pages = int(handle.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
