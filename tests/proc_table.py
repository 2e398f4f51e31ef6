"""The process table as /proc shows it (psutil is not a dependency of the portal)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def is_alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_pids(pid_file: Path, timeout_s: float = 60.0) -> list[int]:
    """The pids a plugin wrote to `pid_file`, once it is there (the file is renamed in whole)."""
    deadline = time.monotonic() + timeout_s
    while not pid_file.exists():
        assert time.monotonic() < deadline, f"{pid_file} never appeared: the call never started"
        time.sleep(0.05)
    return [int(pid) for pid in pid_file.read_text().split()]


def wait_gone(pids: list[int], timeout_s: float = 10.0) -> float:
    """Seconds until none of `pids` runs; fails naming those still running after timeout_s."""
    started = time.monotonic()
    while any(is_alive(pid) for pid in pids):
        left = [pid for pid in pids if is_alive(pid)]
        assert time.monotonic() - started < timeout_s, f"still running: {left}"
        time.sleep(0.02)
    return time.monotonic() - started


# A plugin whose call starts a child process, says both pids, then sleeps: cancel it.
SLOW_TREE = """
import os
import subprocess
import sys
import time

limits = {"timeout_s": 120}


def run(pid_file, seconds=60):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(pid_file + ".tmp", "w") as handle:
        handle.write(f"{os.getpid()} {child.pid}")
    os.rename(pid_file + ".tmp", pid_file)
    time.sleep(float(seconds))
    return {"slept_s": seconds}
"""


def output_once_exited(process: subprocess.Popen, timeout_s: float = 60.0) -> tuple[str, str]:
    """The stdout and stderr of `process`, told to stop, once it exited; one still running after
    timeout_s fails with the stack of each of its threads (started with PYTHONFAULTHANDLER=1,
    it prints them at SIGABRT)."""
    try:
        return process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        try:
            _, stderr = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # its children may hold the pipe: no stacks then
            process.kill()
            _, stderr = process.communicate()
        stacks = stderr[-8000:]
        raise AssertionError(
            f"{process.args} ran on {timeout_s:g} s after it was told to stop:\n{stacks}"
        ) from None
