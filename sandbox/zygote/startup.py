"""Setting a host up before it serves: where it imports from, its stdio, its isolation
(network, user), the bytecode cache, and the Preload warm-up (plugin code, run here once).

Each step that cannot do what was asked says so through ``warn``: the portal shows it with
every result from this host.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib.machinery
import json
import os
import pwd
import signal
import sys

from sandbox.zygote import linux
from sandbox.zygote.child import drop_privileges, resolve_target
from sandbox.zygote.envelope import exception_facts
from sandbox.zygote.protocol import BYTECODE_DIR_KIND

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: kept out of the host, whose size slows every fork
    import io
    from collections.abc import Callable

    from sandbox.messages import ExceptionFacts
    from sandbox.zygote.calldirs import CallDirs

    Warn = Callable[[str], None]


def isolate_network(warn: Warn) -> None:
    """No network for plugins: a network namespace of its own (no interfaces up)."""
    try:
        if os.geteuid() == 0:
            linux.unshare(linux.CLONE_NEWNET)
        else:
            _unshare_user_and_network()
    except OSError as exc:
        warn(
            "SANDBOX_NO_NETWORK is set but the network could not be isolated "
            f"({exc}); plugins in this host HAVE network access"
        )


def resolve_run_as(name: str, warn: Warn, unreadable: list[str]) -> tuple[int, int] | None:
    """(uid, gid) of SANDBOX_RUN_AS, or None (with a warning) when calls cannot drop to it;
    the sys.path entries that user cannot read are added to ``unreadable``."""
    if os.geteuid() != 0:
        warn(
            f"SANDBOX_RUN_AS={name} is ignored because the sandbox host is not root "
            f"(uid {os.geteuid()}); plugins run as uid {os.geteuid()}"
        )
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        warn(f"SANDBOX_RUN_AS={name} names no such user; plugins run as root")
        return None
    user = (entry.pw_uid, entry.pw_gid)
    unreadable += _unreadable_as(user, [p for p in sys.path if os.path.exists(p)])
    if unreadable:
        warn(
            f"SANDBOX_RUN_AS={name} cannot read {', '.join(unreadable)}; plugins importing "
            "modules from there will fail (make them readable by that user)"
        )
    return user


def drop_own_privileges(uid: int, gid: int, portal_pid: int) -> None:
    """A warm-up is plugin code: the whole host becomes the unprivileged user before it.
    Its calls then inherit that user; the host serves this one plugin only."""
    drop_privileges(uid, gid)
    # The kernel clears the death signal when credentials change: arm it again.
    linux.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != portal_pid:
        os._exit(1)


def cache_bytecode(dirs: CallDirs, warn: Warn) -> str | None:
    """Under PYTHONDONTWRITEBYTECODE every call would compile its plugin's source again
    (a fresh process keeps nothing): compile once into a directory private to this host,
    returned (None: no cache)."""
    try:
        pycache_dir = dirs.make_private(BYTECODE_DIR_KIND)
    except OSError as exc:
        warn(f"no bytecode cache ({exc}); each call compiles its plugin's source")
        sys.dont_write_bytecode = True  # as the portal asked: write nowhere
        return None
    # Children running as SANDBOX_RUN_AS cannot write here (0700, ours): one plugin must
    # not plant bytecode that another plugin's call would then run.
    sys.pycache_prefix = pycache_dir
    sys.dont_write_bytecode = False
    return pycache_dir


WARMUP_OUTPUT_TAIL = 16 * 1024  # of each stream a warm-up writes, kept for its first call
WARMUP_VALUE_LIMIT = 64 * 1024  # of a warm-up's return value as JSON text; larger is dropped


def warm_up(preload: tuple | None, output: dict[str, object]) -> ExceptionFacts | None:
    """Run a Preload's warm-up; None when it returned, else its exception's facts. What it
    writes to fds 1 and 2 (native libraries too) goes into ``output``'s tails instead."""
    if preload is None:
        return None
    target, args = preload
    captured = _capture_fds()
    try:
        value = resolve_target(target)(*args)
    except BaseException as exc:  # reported to the portal, then the host exits
        return exception_facts(exc, phase="warm-up")
    finally:
        output.update(_release_fds(captured))
    with contextlib.suppress(Exception):  # not JSON data: the portal gets None
        if len(json.dumps(value, allow_nan=False)) <= WARMUP_VALUE_LIMIT:
            output["warmup_value"] = value
    return None


CUDA_FORK_REFUSAL = (
    "its warm-up (the plugin's import and setup()) initialised CUDA, and a process forked "
    "after that cannot use CUDA"
)


def cuda_initialized() -> bool:
    """Whether a warm-up initialised CUDA through torch; torch is asked only when the warm-up
    loaded it (never imported here)."""
    torch = sys.modules.get("torch")
    try:
        return torch is not None and bool(torch.cuda.is_initialized())
    except BaseException:  # a broken or partial torch: then it initialised nothing we can use
        return False


def cuda_refusal() -> ExceptionFacts:
    """Why a fork host refuses to serve after a warm-up that initialised CUDA."""
    return {
        "phase": "warm-up",
        "error_type": "CUDAInitialized",
        "message": CUDA_FORK_REFUSAL,
        "fault": "unavailable",
        "detail": {"cuda_initialized": True},
    }


def _capture_fds() -> list[tuple[int, int, int]]:
    """Point fds 1 and 2 at memory files: (fd, saved copy, memory file) each."""
    captured = []
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            memory = os.memfd_create(f"warmup-{fd}", os.MFD_CLOEXEC)
            saved = os.dup(fd)
            os.dup2(memory, fd)
            captured.append((fd, saved, memory))
    return captured


def _release_fds(captured: list[tuple[int, int, int]]) -> dict[str, str]:
    for stream in (sys.stdout, sys.stderr):  # what Python still buffers belongs to the warm-up
        with contextlib.suppress(Exception):
            stream.flush()
    tails = {}
    for fd, saved, memory in captured:
        os.dup2(saved, fd)
        os.close(saved)
        size = os.fstat(memory).st_size
        data = os.pread(memory, WARMUP_OUTPUT_TAIL, max(0, size - WARMUP_OUTPUT_TAIL))
        os.close(memory)
        tails["warmup_stdout" if fd == 1 else "warmup_stderr"] = data.decode(errors="replace")
    return tails


def restore_plugin_environment(values: dict[str, str | None]) -> None:
    """Put back the variables the portal changed only to start this host."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def configure_stdio() -> tuple[io.TextIOWrapper, io.TextIOWrapper]:
    """Set up sys.stdout/sys.stderr once, as every child will use them (on its pipes)."""
    streams: list[io.TextIOWrapper] = []
    for name, fd, line_buffering in (("stdout", 1, False), ("stderr", 2, True)):
        stream = getattr(sys, name)
        if stream is None or not hasattr(stream, "reconfigure"):  # fd was closed at startup
            stream = open(fd, "w", closefd=False)  # noqa: SIM115 - lives as long as the host
            setattr(sys, name, stream)
            setattr(sys, f"__{name}__", stream)
        stream.reconfigure(
            encoding="utf-8", errors="backslashreplace", line_buffering=line_buffering
        )
        streams.append(stream)
    faulthandler.enable(file=sys.stderr)  # a crash leaves its Python traceback on fd 2
    return streams[0], streams[1]


def restore_stdio(stdio: tuple[io.TextIOWrapper, io.TextIOWrapper]) -> None:
    # Flush what a warm-up printed, so it is not repeated in every child's output.
    for stream in (sys.stdout, sys.stderr, *stdio):
        with contextlib.suppress(Exception):
            stream.flush()
    sys.stdout, sys.stderr = stdio
    # typeshed marks sys.__stdout__/__stderr__ Final; the host repoints them on purpose.
    sys.__stdout__, sys.__stderr__ = stdio  # type: ignore[misc]


def warm_import_caches() -> None:
    # List each sys.path directory once here, so a child's import does not have to.
    # This only caches directory listings; no module is imported.
    for entry in sys.path:
        # A private CPython helper that typeshed does not declare.
        finder = importlib.machinery.PathFinder._path_importer_cache(entry)  # type: ignore[attr-defined]
        if finder is not None:
            with contextlib.suppress(Exception):
                finder.find_spec("_sandbox_no_such_module_")


def _unreadable_as(user: tuple[int, int], paths: list[str]) -> list[str]:
    """Which paths ``user`` cannot read, asked of a short-lived child that becomes it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(user[1], user[1], user[1])
            os.setresuid(user[0], user[0], user[0])
            bad = [p for p in paths if not os.access(p, os.R_OK | os.X_OK * os.path.isdir(p))]
            os.write(write_end, "\0".join(bad).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        data = handle.read()
    os.waitpid(pid, 0)
    return [p for p in data.decode().split("\0") if p]


def _unshare_user_and_network() -> None:
    """Unprivileged: a user namespace (mapping our own ids) makes a network one possible."""
    uid, gid = os.getuid(), os.getgid()
    linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNET)
    for path, text in (
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", f"{uid} {uid} 1"),
        ("/proc/self/gid_map", f"{gid} {gid} 1"),
    ):
        with open(path, "w") as handle:
            handle.write(text)
