"""The per-call child ("spare"): forked from a host ahead of time, runs exactly one call.

A spare is forked while the host is idle. It joins its own process group, puts its
output pipes on fds 1-3, closes every other host fd, arms its parent-death signal, enters
the working directory the host made for its call and rehearses a call to take the memory
faults every call causes; then it blocks on its command pipe (fd 4). The call's command
brings the payload, rlimits and user: the spare applies them and runs the plugin. Fork and
setup are thus off the call's critical path.

Everything here runs *after* ``os.fork()`` in the host. ``run_spare`` never returns: a
child that fell back into the host's event loop would be a second host.

Imports are kept to what every call needs (they are inherited from the host for free);
``traceback`` is imported only when something failed.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import pickle
import resource
import select
import signal
import stat
import sys

from sandbox.zygote import linux
from sandbox.zygote.envelope import (
    exception_envelope,
    exit_envelope,
    format_exception,
    to_json,
    to_pickle,
)
from sandbox.zygote.protocol import (
    COMMAND_FD,
    COMMAND_HEADER,
    RESULT_FD,
    RESULT_LOST_EXIT,
    encode_result,
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: the host (and so every fork) never imports them
    from collections.abc import Callable, Mapping
    from typing import Any

    from sandbox.messages import Envelope

    RLimits = list[tuple[int, tuple[int, int]]]

MiB = 1024 * 1024
INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE: the sandbox's own code failed in the child


class SpareSpec:
    """What a spare inherits (in memory, at fork): its fds, the host pid, the working
    directory the host made for its call, and whether to rehearse a call while it waits (false
    when the host is busy: then the CPU is better left to running calls)."""

    __slots__ = (
        "calldir",
        "command_r",
        "host_pid",
        "rehearse",
        "result_file",
        "result_pipe",
        "result_w",
        "stderr_w",
        "stdout_w",
    )
    calldir: str
    command_r: int
    host_pid: int
    rehearse: bool
    result_file: str  # where the result goes if the plugin closed or reused fd 3
    result_pipe: tuple[int, int] | None  # (st_dev, st_ino) of the result pipe, to recognise fd 3
    result_w: int
    stderr_w: int
    stdout_w: int

    def __init__(self, **fields: object) -> None:
        for name in self.__slots__:
            setattr(self, name, fields[name])


class Command:
    """One call, sent by the host down a spare's command pipe.

    payload: pickle of (target, args, kwargs) made by the portal; rlimits: (resource,
    (soft, hard)) pairs; run_as: (uid, gid) to drop to, or None; result_format: "json"
    (the default: data only) or "pickle" (trusted code only, see SandboxConfig).
    """

    __slots__ = ("payload", "result_bytes", "result_format", "rlimits", "run_as", "target_name")
    payload: bytes
    result_bytes: int
    result_format: str
    rlimits: RLimits
    run_as: tuple[int, int] | None
    target_name: str

    def __init__(self, **fields: object) -> None:
        for name in self.__slots__:
            setattr(self, name, fields[name])

    def encode(self) -> list[bytes]:
        data = pickle.dumps(
            tuple(getattr(self, name) for name in self.__slots__), pickle.HIGHEST_PROTOCOL
        )
        return [COMMAND_HEADER.pack(len(data)), data]

    @classmethod
    def decode(cls, data: bytes) -> Command:
        return cls(**dict(zip(cls.__slots__, pickle.loads(data), strict=True)))


def resolve_target(target: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import and return the callable a target names (in the child or a warm host)."""
    if not isinstance(target, str):
        return target
    module_name, _, attr_path = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target!r} is a {type(obj).__name__}, not a callable")
    return obj


def run_spare(spec: SpareSpec) -> None:  # never returns: ends in os._exit
    code = INTERNAL_ERROR_EXIT
    try:
        code = _serve_one_call(spec)
    except BaseException:  # last resort: say something, then exit
        _last_words()
    finally:
        os._exit(code)


def _serve_one_call(spec: SpareSpec) -> int:
    _become_spare(spec)
    _enter_call_dir(spec.calldir)
    channel = _ResultChannel(RESULT_FD, spec.result_file, spec.result_pipe)
    if spec.rehearse and not _command_waiting():
        _rehearse()  # idle time: take the copy-on-write faults now, not during the call
    command = _read_command()
    if command is None:
        return 0  # the host retired this spare
    try:
        _become_call_process(command, spec.host_pid)
    except BaseException as exc:  # setup failed: report it as ours
        _last_words()
        return _emergency_deliver(exc)
    envelope, value = invoke(command.payload, command.result_bytes, command.result_format)
    flush_stdio()
    return channel.deliver(envelope, value)


# --- becoming a spare, then the call's process ---------------------------------------


def _become_spare(spec: SpareSpec) -> None:
    # Own process group: one killpg() reaches everything it spawns. The host does the
    # same from its side (whoever is first wins the race), so failure here is fine.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    # Signals and sys.stdout/sys.stderr are deliberately left as the host set them up:
    # Python defaults, streams reconfigured once in the host.
    _install_fds(spec)
    linux.set_process_name("sandbox-spare")
    linux.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != spec.host_pid:
        os._exit(INTERNAL_ERROR_EXIT)  # host died before the death signal was armed


def _install_fds(spec: SpareSpec) -> None:
    # fd 0 stays the host's: /dev/null, by construction of the host process.
    os.dup2(spec.stdout_w, 1)
    os.dup2(spec.stderr_w, 2)
    os.dup2(spec.result_w, RESULT_FD, inheritable=False)
    os.dup2(spec.command_r, COMMAND_FD, inheritable=False)
    # Drop the host's fds (control socket, epoll, other calls' pipes): a spare holding the
    # control socket would hide the host's death from the portal.
    os.closerange(COMMAND_FD + 1, 1 << 20)


def _command_waiting() -> bool:
    return bool(select.select([COMMAND_FD], [], [], 0)[0])


def _enter_call_dir(calldir: str) -> None:
    os.chdir(calldir)
    os.environ["TMPDIR"] = calldir  # tempfile, if the plugin imports it, uses this
    tempfile: Any = sys.modules.get("tempfile")  # Any: we set a module attribute
    if tempfile is not None:  # imported by a Preload warm-up: drop its cached default
        tempfile.tempdir = calldir


def _rehearse() -> None:
    # Every call unpickles, imports a module, pickles and builds a record; doing all of it
    # once here copies the host pages they write to (~0.5 ms of page faults) before the
    # call arrives. Nothing is written anywhere, and the module is forgotten again.
    payload = pickle.dumps(("sandbox.zygote.prefault:rehearse", (1,), {"k": None}), -1)
    try:
        envelope, value = invoke(payload, 1 << 20, "json")
        encode_result(envelope, value, _own_usage())
    finally:
        sys.modules.pop("sandbox.zygote.prefault", None)
        with contextlib.suppress(AttributeError):
            delattr(sys.modules["sandbox.zygote"], "prefault")


def _read_command() -> Command | None:
    first = os.read(COMMAND_FD, 1 << 16)  # usually the whole command, in one read
    if len(first) < COMMAND_HEADER.size:
        return None  # the host retired this spare (or died)
    size = COMMAND_HEADER.unpack_from(first)[0]
    data = first[COMMAND_HEADER.size :]
    if len(data) < size:
        rest = _read_exact(COMMAND_FD, size - len(data))
        if rest is None:
            return None
        data += rest
    os.close(COMMAND_FD)
    return Command.decode(data)


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _become_call_process(command: Command, host_pid: int) -> None:
    linux.set_process_name("sandbox-call")
    for which, pair in command.rlimits:
        resource.setrlimit(which, pair)
    if command.run_as is not None:
        drop_privileges(*command.run_as)
        # The kernel clears the death signal when credentials change: arm it again.
        linux.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != host_pid:
            os._exit(INTERNAL_ERROR_EXIT)
    sys.argv = [command.target_name]


def host_hard_limits() -> dict[int, int]:
    """The host's hard rlimits, read once in the host (children cannot raise them)."""
    which = (
        resource.RLIMIT_CORE,
        resource.RLIMIT_CPU,
        resource.RLIMIT_AS,
        resource.RLIMIT_NOFILE,
        resource.RLIMIT_FSIZE,
    )
    return {w: resource.getrlimit(w)[1] for w in which}


def rlimits_for(limits: Mapping[str, float | None], hard_limits: dict[int, int]) -> RLimits:
    """(resource, (soft, hard)) pairs for a call, computed in the host before the fork."""
    pairs: RLimits = []

    def limit(which: int, soft: int, hard: int | None = None) -> None:
        hard = soft if hard is None else hard
        current_hard = hard_limits[which]
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)  # cannot raise a hard limit we do not own
            soft = min(soft, hard)
        pairs.append((which, (soft, hard)))

    limit(resource.RLIMIT_CORE, 0)  # no core files from crashing plugins
    if cpu_s := limits.get("cpu_s"):
        seconds = max(1, math.ceil(cpu_s))
        # SIGXCPU at the soft limit; the hard limit one second later SIGKILLs a plugin
        # that ignores SIGXCPU.
        limit(resource.RLIMIT_CPU, seconds, seconds + 1)
    if address_space_mb := limits.get("address_space_mb"):  # memory_mb is the host's (RSS)
        limit(resource.RLIMIT_AS, int(address_space_mb * MiB))
    if open_files := limits.get("open_files"):
        limit(resource.RLIMIT_NOFILE, int(open_files))
    if file_size_mb := limits.get("file_size_mb"):
        limit(resource.RLIMIT_FSIZE, int(file_size_mb * MiB))
    return pairs


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


# --- running the call --------------------------------------------------------------------


def invoke(
    payload: bytes, result_bytes: int, result_format: str
) -> tuple[Envelope | None, bytes | memoryview]:
    try:
        target, args, kwargs = pickle.loads(payload)
        func = resolve_target(target)
    except BaseException as exc:  # everything the plugin's import can raise
        return exception_envelope(exc, phase="import"), b""
    try:
        value = func(*args, **kwargs)
    except SystemExit as exc:
        return exit_envelope(exc), b""
    except BaseException as exc:  # KeyboardInterrupt included, by contract
        return exception_envelope(exc, phase="call"), b""
    del func, args, kwargs
    if result_format == "pickle":
        return to_pickle(value, result_bytes)
    return to_json(value, result_bytes)


# --- delivering the result ---------------------------------------------------------------


def flush_stdio() -> None:
    streams = [sys.stdout, sys.stderr]
    # Identity, not ==: a plugin's replacement stream may define odd equality.
    streams += [s for s in (sys.__stdout__, sys.__stderr__) if all(s is not t for t in streams)]
    for stream in streams:
        with contextlib.suppress(BaseException):  # closed or replaced by the plugin
            stream.flush()


class _ResultChannel:
    """The result pipe on fd 3, with a file fallback if the plugin closed or reused fd 3."""

    def __init__(self, fd: int, fallback_path: str, identity: tuple[int, int] | None) -> None:
        self.fd = fd
        self.fallback_path = fallback_path
        self.identity = identity  # of the pipe the host made: fd 3 until a plugin changes it

    def deliver(self, envelope: Envelope | None, value: bytes | memoryview) -> int:
        buffers = encode_result(envelope, value, _own_usage())
        if self.identity is not None and pipe_identity(self.fd) == self.identity:
            try:
                _write_all(self.fd, buffers)
                return 0
            except OSError:
                pass  # a partial record fails to parse in the host, which then reads the file
        try:
            fd = os.open(self.fallback_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, buffers)
            finally:
                os.close(fd)
            return 0
        except OSError:
            return RESULT_LOST_EXIT


def _write_all(fd: int, buffers: list) -> None:
    # One writev for the common (small) record: the host wakes once, not once per part.
    views = [memoryview(b).cast("B") for b in buffers]
    written = os.writev(fd, views)
    for view in views:
        if written >= len(view):
            written -= len(view)
            continue
        view = view[written:]
        written = 0
        while view:
            view = view[os.write(fd, view) :]


def pipe_identity(fd: int) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the pipe open on ``fd``; None if it is not a pipe (or closed)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISFIFO(st.st_mode) else None


def _own_usage() -> tuple[int, int]:
    """(peak RSS KiB, CPU microseconds) of this process and the children it waited for:
    what wait4() reports, known before the exit, so the host can answer without waiting."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return max(me.ru_maxrss, kids.ru_maxrss), int(cpu_s * 1e6)


def _emergency_deliver(exc: BaseException) -> int:
    envelope = exception_envelope(exc, phase="setup")
    envelope["outcome"] = "sandbox_failure"
    try:
        _write_all(RESULT_FD, encode_result(envelope, b"", _own_usage()))
        return 0
    except OSError:
        return INTERNAL_ERROR_EXIT


def _last_words() -> None:
    with contextlib.suppress(BaseException):  # stderr may be gone; nothing else to try
        exc = sys.exc_info()[1]
        assert exc is not None  # only ever called from an except block
        os.write(2, ("sandbox call child failed:\n" + format_exception(exc)).encode())
