"""What hosts and their plugins leave behind: processes, found by the mark in their
environment, and a dead host's directories.

Runs in the portal and in the janitor (never in a host). Every host is started with
``SANDBOX_OWNER=<portal>.<host>`` in its environment, where ``<portal>`` is the portal
process's pid and start time: whatever the plugins fork inherits it, also after it leaves
the host's process group or session and is reparented away from the host. When a host is
gone (stopped, killed, lost) or its portal is, everything still carrying its mark is killed.
A process that replaces its whole environment (exec with a new one) escapes the mark;
a cgroup would close that gap (docs/sandbox.md).

A host killed (SIGKILL, the OOM killer) cannot remove its call and bytecode directories
itself: ``remove_dirs_of`` does, once the host is gone.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat

from sandbox.zygote.protocol import HOST_DIR_KINDS

OWNER_VARIABLE = "SANDBOX_OWNER"
SWEEPS = 5  # processes may fork while we look: look again until a sweep finds none


def process_token(pid: int | None = None) -> str:
    """'<pid>-<start time in ticks>': unique to one process for the machine's uptime."""
    pid = os.getpid() if pid is None else pid
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    start_ticks = stat[stat.rfind(b")") + 2 :].split()[19]
    return f"{pid}-{start_ticks.decode()}"


def is_alive(token: str) -> bool:
    """Whether the process a token names still runs (not a later one with its pid)."""
    pid = int(token.split("-", 1)[0])
    try:
        return process_token(pid) == token
    except (OSError, IndexError):
        return False


def marks() -> list[tuple[int, str]]:
    """(pid, mark) of every process (but this one) that carries a SANDBOX_OWNER mark."""
    wanted = f"{OWNER_VARIABLE}=".encode()
    found = []
    own = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == own:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue  # gone, or not ours to read
        for entry in environ.split(b"\0"):
            if entry.startswith(wanted):
                found.append((int(name), entry[len(wanted) :].decode(errors="replace")))
                break
    return found


def marked(prefix: str) -> list[tuple[int, str]]:
    """(pid, mark) of every process whose mark is ``prefix`` or starts with ``prefix.``."""
    return [(pid, mark) for pid, mark in marks() if mark == prefix or mark.startswith(prefix + ".")]


def kill_orphaned() -> list[int]:
    """At a portal's start: kill what the plugins of portals that no longer run left behind
    (in case their janitor could not: it was killed too, or the machine ran out of pids)."""
    dead = {mark.split(".", 1)[0] for _, mark in marks()}
    dead = {token for token in dead if not is_alive(token)}
    killed: list[int] = []
    for token in dead:
        killed += kill_marked(token)
    return killed


def kill_marked(prefix: str) -> list[int]:
    """SIGKILL every process carrying the mark; the pids killed."""
    killed: list[int] = []
    for _ in range(SWEEPS):
        victims = [pid for pid, _ in marked(prefix)]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                continue
    return killed


def host_dir_pattern(pid: str) -> re.Pattern[str]:
    """The names of the directories a host leaves in its tmp dir, for host pid ``pid`` (a
    regular expression: ``\\d+`` matches any host's, as group 1)."""
    kinds = "|".join(re.escape(kind) for kind in HOST_DIR_KINDS)
    return re.compile(rf"(?:{kinds})-({pid})-\d+-[0-9a-f]{{6}}")


def remove_dirs_of(host_pid: int, tmp_dir: str, run_as: str | None) -> None:
    """Remove what a host that is gone left in ``tmp_dir``: its directories owned by us or
    by ``run_as`` (the user its calls ran as), never a symlink or another user's."""
    ours = host_dir_pattern(str(host_pid))
    owners = {os.geteuid()}
    if run_as:
        with contextlib.suppress(KeyError):
            owners.add(pwd.getpwnam(run_as).pw_uid)
    try:
        names = [name for name in os.listdir(tmp_dir) if ours.fullmatch(name)]
    except OSError:
        return
    for name in names:
        path = os.path.join(tmp_dir, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid in owners:
            shutil.rmtree(path, ignore_errors=True)
