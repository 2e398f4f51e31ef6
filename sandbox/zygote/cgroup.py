"""memory_mb enforced by the kernel: each call in a cgroup v2 of its own with ``memory.max``,
where a delegated cgroup v2 directory with the memory controller is available; otherwise the
host samples the call's RSS (sandbox/zygote/calls.py). ``detect`` decides once per host and says
why it fell back, in words for the operator.

The directory is ``SANDBOX_CGROUP`` (a cgroup v2 directory delegated to the portal's user, with
no processes of its own), else this process's own cgroup v2. Per call:
``<directory>/sandbox-call-<host pid>-<n>``; the kernel OOM-kills the call's processes past
``memory.max`` and counts it in ``memory.events``.
"""

from __future__ import annotations

import contextlib
import os

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: the host stays light

if TYPE_CHECKING:
    from sandbox.messages import AnswerFields, HelloFields
    from sandbox.zygote.calls import Call

CGROUP_MEMORY = "cgroup-memory.max"  # SandboxResult.memory_mechanism when the kernel enforced it
RSS_SAMPLING = "rss-sampling"  # ... when the host sampled the tree's RSS from /proc
CGROUP_VARIABLE = "SANDBOX_CGROUP"


def detect(configured: str | None = None, proc: str = "/proc/self") -> tuple[str | None, str]:
    """(the directory to make per-call cgroups in, "") or (None, why RSS sampling is used)."""
    mount = _cgroup2_mount(os.path.join(proc, "mountinfo"))
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted (cgroup v1 only)"
    directory = configured or os.path.join(mount, _own_path(os.path.join(proc, "cgroup")))
    controllers = _read(os.path.join(directory, "cgroup.controllers"))
    if controllers is None:
        return None, f"{directory} is not a cgroup v2 directory"
    if "memory" not in controllers.split():
        return None, (
            f"the memory controller is not available in {directory} (its controllers: "
            f"{controllers.strip() or 'none'}; on a v1/v2 hybrid it belongs to cgroup v1)"
        )
    subtree = os.path.join(directory, "cgroup.subtree_control")
    if not os.access(directory, os.W_OK) or not os.access(subtree, os.W_OK):
        return None, f"{directory} is not delegated to this user (not writable)"
    if "memory" not in (_read(subtree) or "").split():
        try:
            _write(subtree, "+memory")
        except OSError as exc:
            return None, (
                f"the memory controller cannot be enabled for {directory}'s children ({exc}); "
                f"delegate an empty cgroup v2 directory and name it in {CGROUP_VARIABLE}"
            )
    return directory, ""


class MemoryControl:
    """A host's memory enforcement: per-call cgroups where detection allowed them."""

    def __init__(self, configured: str | None, host_pid: int) -> None:
        self.directory, self.fallback = detect(configured)
        self.host_pid = host_pid
        self.count = 0

    def hello(self) -> HelloFields:
        """What the host tells the portal of it (beside ok and pid, which the host sets): the
        mechanism, and why not cgroups."""
        mechanism = CGROUP_MEMORY if self.directory else RSS_SAMPLING
        return {
            "ok": True,
            "pid": self.host_pid,
            "memory_mechanism": mechanism,
            "memory_fallback": self.fallback or None,
        }

    def group_for(self, limits: dict) -> CallGroup | None:
        """A new call's cgroup when it has a memory limit and cgroups are in use."""
        memory_mb = limits.get("memory_mb")
        if not memory_mb or not self.directory:
            return None
        self.count += 1
        name = f"sandbox-call-{self.host_pid}-{self.count}"
        try:
            return CallGroup(make_call_group(self.directory, name, memory_mb))
        except OSError:
            return None  # this call is sampled instead

    def attach(self, call: Call, group: CallGroup | None) -> None:
        """The call is the kernel's to limit when its process joined its group."""
        if group is not None and not group.joined:
            self.discard(group)
        elif group is not None:
            call.cgroup = group.path
            call.memory_cap_kb = call.memory_check_at = None  # no sampling: the kernel limits

    def discard(self, group: CallGroup | None) -> None:
        """A group no process joined (its call never started, or could not join it)."""
        if group is not None:
            remove_group(group.path)

    def report(self, call: Call, fields: AnswerFields) -> None:
        if call.cgroup is None:
            fields["memory_mechanism"] = RSS_SAMPLING if call.memory_cap_kb else None
            return
        fields["memory_mechanism"] = CGROUP_MEMORY
        fields["memory_exceeded"] = oom_killed(call.cgroup)
        fields["memory_peak_kb"] = peak_kb(call.cgroup)

    def release(self, call: Call) -> None:
        if call.cgroup is not None:  # its processes are reaped: the group is empty
            remove_group(call.cgroup)


class CallGroup:
    """One call's cgroup, and whether its process joined it (before its command)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.joined = False

    def join(self, pid: int) -> None:
        try:
            add_process(self.path, pid)
            self.joined = True
        except OSError:  # then the host samples the call's memory instead
            self.joined = False


def make_call_group(parent: str, name: str, memory_mb: float) -> str:
    """A cgroup for one call, its memory.max set (and no swap to escape into)."""
    path = os.path.join(parent, name)
    os.mkdir(path)
    _write(os.path.join(path, "memory.max"), str(int(memory_mb * 1024 * 1024)))
    with contextlib.suppress(OSError):  # absent without swap accounting
        _write(os.path.join(path, "memory.swap.max"), "0")
    return path


def add_process(path: str, pid: int) -> None:
    _write(os.path.join(path, "cgroup.procs"), str(pid))


def oom_killed(path: str) -> bool:
    """Whether the kernel killed a process of the group for passing memory.max."""
    for line in (_read(os.path.join(path, "memory.events")) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value or 0) > 0
    return False


def peak_kb(path: str) -> int | None:
    """The group's peak memory (memory.peak, Linux 5.19+), in KiB; None where unknown."""
    text = _read(os.path.join(path, "memory.peak"))
    return int(text) // 1024 if text and text.strip().isdigit() else None


def remove_group(path: str) -> None:
    with contextlib.suppress(OSError):  # busy until its processes are reaped: retried later
        os.rmdir(path)


def _cgroup2_mount(mountinfo: str) -> str | None:
    for line in (_read(mountinfo) or "").splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        fstype = line.split(" - ", 1)[1].split()[0]
        if fstype == "cgroup2":
            return fields[4]
    return None


def _own_path(cgroup_file: str) -> str:
    for line in (_read(cgroup_file) or "").splitlines():
        if line.startswith("0::"):
            return line[3:].strip().lstrip("/")
    return ""


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)
