"""The per-call child: forked from a host, becomes a fresh limited process, runs one call.

Everything here runs *after* ``os.fork()`` in the host. ``run_call`` never returns: a child
that fell back into the host's event loop would be a second host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import io
import math
import os
import pickle
import resource
import signal
import stat
import sys
import tempfile
import traceback
from typing import Any, NoReturn

from sandbox import _linux
from sandbox._protocol import RESULT_FD, RESULT_FILE, RESULT_LOST_EXIT, encode_result
from sandbox.targets import resolve_target

MiB = 1024 * 1024
INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE: the sandbox's own code failed in the child
TRACEBACK_LIMIT = 32 * 1024
MESSAGE_LIMIT = 2000


@dataclasses.dataclass(slots=True)
class ChildSpec:
    """What the host tells a freshly forked child (inherited in memory, not sent)."""

    payload: bytes  # pickle of (target, args, kwargs) made by the portal
    limits: dict[str, Any]
    calldir: str
    stdout_w: int
    stderr_w: int
    result_w: int
    host_pid: int
    target_name: str
    run_as: tuple[int, int] | None = None  # (uid, gid) when dropping privileges


def run_call(spec: ChildSpec) -> NoReturn:
    code = INTERNAL_ERROR_EXIT
    try:
        code = _run(spec)
    except BaseException:  # last resort: say something, then exit
        _last_words()
    finally:
        os._exit(code)


def _run(spec: ChildSpec) -> int:
    try:
        _become_call_process(spec)
        channel = _ResultChannel(RESULT_FD, os.path.join(spec.calldir, RESULT_FILE))
    except BaseException as exc:  # setup failed: report it as ours
        _last_words()
        return _emergency_deliver(spec, exc)
    envelope, value = _invoke(spec.payload, spec.limits["result_bytes"])
    _flush_stdio()
    return channel.deliver(envelope, value)


# --- becoming a fresh, limited process -------------------------------------------------


def _become_call_process(spec: ChildSpec) -> None:
    # Own process group: one killpg() reaches everything it spawns. The host does the
    # same from its side (whoever is first wins the race), so failure here is fine.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _reset_signals()
    _install_fds(spec)
    _fresh_stdio()
    _apply_rlimits(spec.limits)
    if spec.run_as is not None:
        _drop_privileges(*spec.run_as)
    # After any uid change: the kernel clears the death signal when credentials change.
    _linux.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != spec.host_pid:
        os._exit(INTERNAL_ERROR_EXIT)  # host died before the death signal was armed
    os.chdir(spec.calldir)
    os.environ["TMPDIR"] = spec.calldir
    tempfile.tempdir = spec.calldir  # the host already computed its own default
    sys.argv = [spec.target_name]


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _install_fds(spec: ChildSpec) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(spec.stdout_w, 1)
    os.dup2(spec.stderr_w, 2)
    os.dup2(spec.result_w, RESULT_FD, inheritable=False)
    # Drop the host's fds (control socket, epoll, other calls' pipes): a child holding
    # another call's pipe would delay that call's end-of-output.
    os.closerange(RESULT_FD + 1, 1 << 20)


def _fresh_stdio() -> None:
    # New objects: the host's ones may hold locks or buffered bytes from before the fork.
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = open(  # noqa: SIM115
        1, "w", encoding="utf-8", errors="backslashreplace", closefd=False
    )
    sys.stderr = sys.__stderr__ = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )
    faulthandler.enable(file=sys.stderr)  # a crash leaves its Python traceback in stderr


def _apply_rlimits(limits: dict[str, Any]) -> None:
    _set_rlimit(resource.RLIMIT_CORE, 0)  # no core files from crashing plugins
    if limits.get("cpu_s"):
        seconds = max(1, math.ceil(limits["cpu_s"]))
        # SIGXCPU at the soft limit; the hard limit one second later SIGKILLs a plugin
        # that ignores SIGXCPU.
        _set_rlimit(resource.RLIMIT_CPU, seconds, seconds + 1)
    if limits.get("memory_mb"):
        _set_rlimit(resource.RLIMIT_AS, int(limits["memory_mb"] * MiB))
    if limits.get("open_files"):
        _set_rlimit(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    if limits.get("file_size_mb"):
        _set_rlimit(resource.RLIMIT_FSIZE, int(limits["file_size_mb"] * MiB))


def _set_rlimit(which: int, soft: int, hard: int | None = None) -> None:
    hard = soft if hard is None else hard
    _, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)  # cannot raise a hard limit we do not own
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


# --- running the call --------------------------------------------------------------------


def _invoke(payload: bytes, result_bytes: int) -> tuple[dict[str, Any], Any]:
    try:
        target, args, kwargs = pickle.loads(payload)
        func = resolve_target(target)
    except BaseException as exc:  # everything the plugin's import can raise
        return _exception_envelope(exc, phase="import"), b""
    try:
        value = func(*args, **kwargs)
    except SystemExit as exc:
        return _exit_envelope(exc), b""
    except BaseException as exc:  # KeyboardInterrupt included, by contract
        return _exception_envelope(exc, phase="call"), b""
    del func, args, kwargs
    return _serialise(value, result_bytes)


def _exit_envelope(exc: SystemExit) -> dict[str, Any]:
    code = exc.code
    message = None
    if code is None:
        code = 0
    elif not isinstance(code, int):
        message = _safe_str(code)  # Python prints a non-int exit "code" and exits 1
        code = 1
    envelope = _exception_envelope(exc, phase="call")
    envelope.update(outcome="exited", exit_code=code, message=message)
    return envelope


def _exception_envelope(exc: BaseException, phase: str) -> dict[str, Any]:
    tb = exc.__traceback__
    frames = traceback.extract_tb(tb)
    # Free the plugin's locals first: after a MemoryError they hold the memory we need.
    traceback.clear_frames(tb)
    location = None
    if frames:
        last = frames[-1]
        location = f"{last.filename}:{last.lineno} in {last.name}"
    try:
        text = "".join(traceback.format_exception(exc))
    except BaseException:  # a broken __str__ must not lose the outcome
        text = f"{type(exc).__name__} (traceback unavailable)\n"
    outcome = "memory" if isinstance(exc, MemoryError) else "error"
    return {
        "outcome": outcome,
        "phase": phase,
        "error_type": type(exc).__name__,
        "message": _safe_str(exc),
        "location": location,
        "traceback": text[-TRACEBACK_LIMIT:],
    }


def _safe_str(obj: object) -> str:
    try:
        text = str(obj)
    except BaseException:
        text = f"<unprintable {type(obj).__name__}>"
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "..."


class _ResultTooLarge(Exception):
    pass


class _CappedWriter(io.BytesIO):
    """Pickle target that stops as soon as the value exceeds its cap (bounded memory)."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self._cap = cap

    def write(self, data: Any) -> int:
        if self.tell() + memoryview(data).nbytes > self._cap:
            raise _ResultTooLarge
        return super().write(data)


def _serialise(value: Any, cap: int) -> tuple[dict[str, Any], Any]:
    writer = _CappedWriter(cap)
    try:
        pickle.Pickler(writer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except _ResultTooLarge:
        return {
            "outcome": "output_limit",
            "phase": "serialise",
            "value_type": _type_name(value),
        }, b""
    except MemoryError as exc:
        return _exception_envelope(exc, phase="serialise"), b""
    except BaseException as exc:  # whatever __reduce__ of plugin objects raises
        envelope = _exception_envelope(exc, phase="serialise")
        envelope.update(outcome="unserialisable", value_type=_type_name(value))
        return envelope, b""
    return {"outcome": "ok", "value_bytes": writer.tell()}, writer.getbuffer()


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


# --- delivering the result ---------------------------------------------------------------


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(BaseException):  # closed or replaced by the plugin
            stream.flush()


class _ResultChannel:
    """The result pipe on fd 3, with a file fallback if the plugin closed or reused fd 3."""

    def __init__(self, fd: int, fallback_path: str) -> None:
        self.fd = fd
        self.fallback_path = fallback_path
        self.identity = self._identify(fd)

    @staticmethod
    def _identify(fd: int) -> tuple[int, int] | None:
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISFIFO(st.st_mode) else None

    def deliver(self, envelope: dict[str, Any], value: Any) -> int:
        buffers = encode_result(envelope, value)
        if self.identity is not None and self._identify(self.fd) == self.identity:
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


def _write_all(fd: int, buffers: list[Any]) -> None:
    for buffer in buffers:
        view = memoryview(buffer).cast("B")
        while view:
            written = os.write(fd, view)
            view = view[written:]


def _emergency_deliver(spec: ChildSpec, exc: BaseException) -> int:
    envelope = _exception_envelope(exc, phase="setup")
    envelope["outcome"] = "sandbox_failure"
    # The original pipe fd is valid until closerange(); after it, the pipe is on RESULT_FD
    # (dup2'd before closerange). Never guess fd 3 while the host's fds may still be open.
    for fd in (spec.result_w, RESULT_FD):
        try:
            _write_all(fd, encode_result(envelope))
            return 0
        except OSError:
            continue
    return INTERNAL_ERROR_EXIT


def _last_words() -> None:
    with contextlib.suppress(BaseException):  # stderr may be gone; nothing else to try
        os.write(2, ("sandbox call child failed:\n" + traceback.format_exc()).encode())
