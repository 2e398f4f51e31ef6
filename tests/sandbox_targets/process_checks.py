"""Test-side helpers (run in the pytest process, not in the sandbox): look for leftovers
in the process table with psutil."""

import os
import time
import uuid

import psutil

from sandbox import sandbox_status


def new_marker() -> str:
    return f"sandbox-test-marker-{uuid.uuid4().hex}"


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def is_running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has finished; it only awaits its parent's wait)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def marked_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(marker in part for part in cmdline) and is_running(proc.pid):
            found.append(proc)
    return found


def host_pids() -> list[int]:
    return [entry["pid"] for entry in sandbox_status() if entry["alive"]]


def host_descendants() -> list[psutil.Process]:
    """Running processes below this process's sandbox hosts, except the idle spare call
    processes each host keeps ready (named "sandbox-spare")."""
    found = []
    for pid in host_pids():
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        found.extend(p for p in children if is_running(p.pid) and not _is_idle_spare(p))
    return found


def idle_spares(host_pid: int) -> dict[int, int]:
    """pid -> nice value of a host's idle spare call processes. Spares come and go (the
    host forks them in batches and drops the extra ones), so some vanish while we look."""
    found = {}
    for proc in psutil.Process(host_pid).children():
        try:
            if _is_idle_spare(proc) and is_running(proc.pid):
                found[proc.pid] = proc.nice()
        except psutil.NoSuchProcess:
            continue
    return found


def _is_idle_spare(proc: psutil.Process) -> bool:
    try:
        return proc.name() == "sandbox-spare"
    except psutil.NoSuchProcess:
        return False


def assert_nothing_left(marker: str | None = None, pids=(), timeout: float = 5.0) -> None:
    """Nothing a finished call started may still run: marked, listed, or under a host."""

    def leftovers():
        left = [p for p in pids if is_running(p)]
        if marker is not None:
            left += [p.pid for p in marked_processes(marker)]
        left += [p.pid for p in host_descendants()]
        return left

    wait_until(lambda: not leftovers(), timeout=timeout)
    left = leftovers()
    assert not left, f"processes left running after the call: {describe(left)}"


def describe(pids) -> list[str]:
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            out.append(f"{pid} ppid={proc.ppid()} {proc.status()} {' '.join(proc.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            out.append(f"{pid} (gone)")
    return out


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss
