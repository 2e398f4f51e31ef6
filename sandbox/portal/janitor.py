"""The janitor: outlives its portal process by a moment to kill what that portal's plugins left.

Started once per portal process as ``python -P -m sandbox.portal.janitor --owner TOKEN --tmp DIR``
with a pipe on stdin whose other end only the portal holds. When the pipe closes (the
portal exited, or was killed with SIGKILL), every process marked with the portal's token
is killed and the hosts' directories are removed. Hosts die with the portal by their own
parent-death signal; this catches what their plugins started (a daemon forked in setup()).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys

from sandbox.portal.leftovers import host_dir_pattern, kill_marked


def main(argv: list[str]) -> int:
    try:
        owner = argv[argv.index("--owner") + 1]
        tmp_dir = argv[argv.index("--tmp") + 1]
    except (ValueError, IndexError):
        print("usage: python -m sandbox.portal.janitor --owner TOKEN --tmp DIR", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the portal
    while os.read(0, 4096):  # the portal never writes: this returns b"" when it is gone
        pass
    kill_marked(owner)
    remove_dead_hosts_dirs(tmp_dir)
    return 0


def remove_dead_hosts_dirs(tmp_dir: str) -> None:
    """Remove the call and bytecode directories of hosts that no longer run."""
    ours = host_dir_pattern(r"\d+")
    try:
        names = os.listdir(tmp_dir)
    except OSError:
        return
    for name in names:
        match = ours.fullmatch(name)
        if match and not _is_host(int(match[1])):
            shutil.rmtree(os.path.join(tmp_dir, name), ignore_errors=True)


HOST_NAMES = (b"sandbox-host", b"sandbox-persist")  # processes whose directories these are


def _is_host(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm", "rb") as handle:
            return handle.read().strip() in HOST_NAMES
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
