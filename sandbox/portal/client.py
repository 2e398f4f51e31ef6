"""Portal side: starts and supervises hosts, sends calls, turns answers into results.

Thread-safe: any number of portal threads may call at once. Each host has one socket;
callers write requests under a lock and wait on their own Event; one reader thread per host
hands answers out by call id. Callers never block on I/O without a deadline, so a wedged
host costs them at most ``timeout_s + grace_s`` before it is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import itertools
import logging
import os
import pickle
import pwd
import re
import select
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from sandbox.config import SandboxConfig, private_cache_dir, scrub_environment
from sandbox.limits import Limits
from sandbox.portal.leftovers import OWNER_VARIABLE, kill_marked
from sandbox.portal.outcome import CallReport, build_result, failure_result
from sandbox.portal.spawn import SANDBOX_ROOT, spawner
from sandbox.portal.wire import HelloFields, answer_blob_limits, check_answer, check_hello
from sandbox.result import Outcome, SandboxResult
from sandbox.targets import Preload, check_target_string, describe_target
from sandbox.zygote import linux
from sandbox.zygote.protocol import (
    BYTECODE_DIR_KIND,
    CALL_DIR_KIND,
    FRAME_HEADER,
    ProtocolError,
    decode_fields,
    encode_frame,
    frame_sizes,
    split_blobs,
)

__all__ = [
    "configure_sandbox",
    "discard_preload",
    "run_plugin_sandboxed",
    "sandbox_config",
    "sandbox_status",
    "shutdown_sandbox",
]

log = logging.getLogger("sandbox")

HOST_MODULE = "sandbox.zygote.host"  # what a host runs, as `python -P -m HOST_MODULE`
STOP_GRACE_S = 2.0  # terminate -> wait -> kill, for hosts
SMALL_FRAME = 64 * 1024  # below this, joining a frame's parts is cheaper than a 2nd syscall
# Variables the portal may change only to start a host; the host gives plugins the originals.
_HOST_ONLY_CHANGES = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")


def run_plugin_sandboxed(
    target: Any,
    /,
    *args: Any,
    limits: Limits | Mapping[str, Any] | None = None,
    preload: Preload | None = None,
    **kwargs: Any,
) -> SandboxResult:
    """Run ``target(*args, **kwargs)`` in a fresh, limited process and report how it went.

    ``target`` is a "module.path:attribute" string (imported only in the child) or a
    callable picklable by reference. ``limits`` and ``preload`` are reserved keyword names;
    every other keyword goes to the target. Never raises for anything the plugin does;
    raises TypeError/ValueError at once for mistakes in the call itself.
    """
    started = time.perf_counter()
    limits = _coerce_limits(limits)
    if preload is not None and not isinstance(preload, Preload):
        raise TypeError(f"preload must be a sandbox.Preload or None, got {type(preload).__name__}")
    name = describe_target(target)
    payload = _encode_call(name, target, args, kwargs)
    try:
        return _current().call(name, payload, limits, preload, started)
    except Exception as exc:  # the contract: never raise for a call's fate
        log.exception("sandbox: internal error running %s", name)
        return failure_result(
            name,
            Outcome.SANDBOX_FAILURE,
            type(exc).__name__,
            f"The sandbox failed internally while running plugin call {name!r}: {exc} "
            "(a sandbox bug; the portal log has the traceback)",
            _elapsed_ms(started),
        )


def configure_sandbox(config: SandboxConfig | None = None, /, **changes: Any) -> SandboxConfig:
    """Replace the sandbox settings (whole, or some fields) and restart hosts to apply them.

    Returns the previous settings, so callers (tests) can restore them.
    """
    global _CONFIG
    with _CONFIG_LOCK:
        previous = _config()
        new = config if config is not None else previous
        if not isinstance(new, SandboxConfig):
            raise TypeError(f"expected a SandboxConfig, got {type(new).__name__}")
        _CONFIG = new.replace(**changes) if changes else new
    shutdown_sandbox()
    return previous


def sandbox_config() -> SandboxConfig:
    """The settings in force (from the environment unless ``configure_sandbox`` was used)."""
    with _CONFIG_LOCK:
        return _config()


def discard_preload(preload: Preload) -> bool:
    """Drop the warm host of ``preload`` so the next call re-imports fresh plugin code.

    Calls already running in it finish normally. Returns whether there was one.
    """
    if not isinstance(preload, Preload):
        raise TypeError(f"expected a sandbox.Preload, got {type(preload).__name__}")
    return _current().discard(preload)


def shutdown_sandbox() -> None:
    """Stop every host now (running calls end as sandbox_failure). Calls after this start
    new hosts. Registered with atexit."""
    sandbox = _SANDBOX
    if sandbox is not None and sandbox.pid == os.getpid():
        sandbox.shutdown()


def sandbox_status() -> list[dict[str, Any]]:
    """One entry per host: preload, pid, alive, calls in flight, warnings (for health pages)."""
    return _current().status()


# --- call preparation ------------------------------------------------------------------


def _coerce_limits(limits: Any) -> Limits:
    if limits is None:
        return Limits()
    if isinstance(limits, Limits):
        return limits
    if isinstance(limits, Mapping):
        return Limits.from_mapping(limits)
    raise TypeError(
        f"limits must be a sandbox.Limits, a mapping or None, got {type(limits).__name__}"
    )


def _encode_call(name: str, target: Any, args: tuple, kwargs: dict) -> bytes:
    if isinstance(target, str):
        check_target_string(target)
    elif not callable(target):
        raise TypeError(
            f"target must be a callable or a 'module.path:attribute' string, "
            f"got {type(target).__name__}"
        )
    try:
        return pickle.dumps((target, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # find out which part is at fault
        problem = exc
    try:
        pickle.dumps(target, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(
            f"Plugin target {name!r} cannot be named by reference ({exc}); pass a "
            "module-level function, a bound method of a picklable instance, or a "
            "'module.path:attribute' string"
        ) from None
    raise TypeError(
        f"An argument for plugin call {name!r} cannot be pickled ({problem}); pass plain data"
    ) from None


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


# --- framing over the host socket --------------------------------------------------------


def _recv_exact(sock: socket.socket, size: int) -> bytearray | None:
    """Exactly ``size`` bytes, or None at EOF."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return buffer


BlobLimits = dict[str, tuple[int, str]]  # blob name: (most bytes, the limit that says so)


def _recv_frame(
    sock: socket.socket, blob_limits: Any
) -> tuple[dict[str, Any], dict[str, bytes]] | None:
    """A frame from a host, or None at EOF. ``blob_limits(fields)`` says how large each blob
    may be; they are checked before a byte of them is read. ProtocolError for a bad frame."""
    header = _recv_exact(sock, FRAME_HEADER.size)
    if header is None:
        return None
    text_len, blobs_len = frame_sizes(header)
    text = _recv_exact(sock, text_len)
    if text is None:
        return None
    fields, declared = decode_fields(text)
    limits: BlobLimits = blob_limits(fields)
    for name, length in declared:
        if name not in limits:
            raise ProtocolError(f"unexpected blob {name[:40]!r}")
        most, limit = limits[name]
        if length > most:
            raise ProtocolError(f"{name} of {length} bytes is over {limit} ({most} bytes)")
    data = _recv_exact(sock, blobs_len)
    if data is None:
        return None
    return fields, split_blobs(data, declared)


def _no_blobs(fields: dict[str, Any]) -> BlobLimits:
    return {}


# --- one host process ------------------------------------------------------------------


class _NotDelivered(Exception):
    """The request never reached the host (it was already gone): safe to retry."""


@dataclasses.dataclass(eq=False)
class _Pending:
    limits: Limits
    event: threading.Event = dataclasses.field(default_factory=threading.Event)
    header: dict[str, Any] | None = None
    blobs: dict[str, bytes] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class StartFailure:
    """Why a host could not be started; becomes the result of the calls that needed it."""

    outcome: Outcome
    error_type: str
    reason: str
    traceback: str | None = None
    signal: str | None = None
    exit_code: int | None = None

    def result(self, name: str, duration_ms: float) -> SandboxResult:
        return failure_result(
            name,
            self.outcome,
            self.error_type,
            f"Plugin call {name!r} could not run: {self.reason}",
            duration_ms,
            traceback=self.traceback,
            signal=self.signal,
            exit_code=self.exit_code,
        )


class _Host:
    """One running host process and its connection."""

    def __init__(self, preload: Preload | None, config: SandboxConfig) -> None:
        self.preload = preload
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.pid: int | None = None
        self.warnings: list[str] = []
        self.plugin_env: dict[str, str | None] = {}  # what plugins get of _HOST_ONLY_CHANGES
        self.base_vsz_mb: float | None = None
        self.started_at = time.time()
        self._lock = threading.Lock()  # guards _pending and _lost
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._lost: str | None = None
        self._reader: threading.Thread | None = None
        self.mark = ""  # SANDBOX_OWNER of this host and of everything its plugins start

    @property
    def usable(self) -> bool:
        return self._lost is None

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._pending

    # start-up

    def start(self, warmup_s: float | None = None) -> StartFailure | None:
        """Start the host; a warm-up may take ``warmup_s`` (the first call's timeout) at most."""
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        starter = spawner(self.config.python, _tmp_dir(self.config))
        self.mark = starter.mark()
        try:
            self.proc = starter.popen(
                [self.config.python, "-P", "-m", HOST_MODULE, "--fd", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                env=self._host_environment(),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # terminal signals are for the portal, not the host
            )
        except OSError as exc:
            parent_sock.close()
            return StartFailure(
                Outcome.SANDBOX_FAILURE,
                type(exc).__name__,
                f"the sandbox host could not be started ({exc}) (check SandboxConfig.python "
                "and the machine's process limits)",
            )
        finally:
            child_sock.close()
        self.sock = parent_sock
        self.pid = self.proc.pid
        failure = self._handshake(warmup_s)
        if failure is not None:
            self._kill_process()
            self._clean_up()
            parent_sock.close()
            self._lost = failure.reason
            return failure
        self._reader = threading.Thread(
            target=self._read_loop, name=f"sandbox-host-{self.pid}", daemon=True
        )
        self._reader.start()
        for warning in self.warnings:
            log.warning("sandbox host %s: %s", self.pid, warning)
        return None

    def _host_environment(self) -> dict[str, str]:
        declared = self.preload.env if self.preload is not None else ()
        env = scrub_environment(os.environ, self.config, declared)
        self.plugin_env = {name: env.get(name) for name in _HOST_ONLY_CHANGES}
        # The host runs `-m sandbox.zygote.host`: make this very package importable first.
        paths = [SANDBOX_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        if self.config.bytecode_cache and sys.dont_write_bytecode:
            cache = private_cache_dir("host-bytecode")
            if cache is not None:
                # Else the host compiles its own modules at every start and keeps ~2.5 MiB
                # of compiler leftovers that every fork copies. The host puts both
                # variables back for plugins (see "plugin_env").
                env.pop("PYTHONDONTWRITEBYTECODE", None)
                env["PYTHONPYCACHEPREFIX"] = cache
        env[OWNER_VARIABLE] = self.mark
        return env

    def _init_message(self) -> dict[str, Any]:
        # '' and relative entries mean "the portal's cwd", which is not the child's cwd.
        sys_path = [os.path.abspath(p) for p in sys.path]
        if SANDBOX_ROOT not in sys_path:
            sys_path.append(SANDBOX_ROOT)
        return {
            "type": "init",
            "portal_pid": os.getpid(),
            "sys_path": sys_path,
            "no_network": self.config.no_network,
            "run_as": self.config.run_as,
            "tmp_dir": _tmp_dir(self.config),
            "spare_children": self.config.spare_children,
            "bytecode_cache": self.config.bytecode_cache,
            "dont_write_bytecode": sys.dont_write_bytecode,
            "plugin_env": self.plugin_env,
        }

    def _handshake(self, warmup_s: float | None) -> StartFailure | None:
        assert self.sock is not None
        timeout = self.config.start_timeout_s
        if self.preload is not None:
            timeout += self.config.warmup_timeout_s
            if warmup_s is not None:  # the call waiting for it would give up by then anyway
                timeout = min(timeout, warmup_s)
        blobs: dict[str, bytes | memoryview] = {}
        if self.preload is not None:
            target = (self.preload.target, self.preload.args)
            blobs["preload"] = pickle.dumps(target, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.sock.settimeout(timeout)
            for buffer in encode_frame(self._init_message(), blobs):
                self.sock.sendall(buffer)
            frame = _recv_frame(self.sock, _no_blobs)
            self.sock.settimeout(None)
            hello = None if frame is None else check_hello(frame[0])
        except TimeoutError:
            return self._start_timeout(timeout, bounded_by_call=timeout == warmup_s)
        except ProtocolError as exc:
            return self._malformed_handshake(exc)
        except OSError:
            hello = None
        if hello is None:
            return self._died_while_starting()
        if not hello.get("ok"):
            return self._warm_up_raised(hello)
        self.warnings = list(hello.get("warnings", []))
        self.base_vsz_mb = hello.get("base_vsz_mb")
        return None

    def _what(self) -> str:
        if self.preload is None:
            return "the sandbox host"
        return f"the Preload warm-up {self.preload.target!r}"

    def _start_timeout(self, timeout: float, bounded_by_call: bool) -> StartFailure:
        setting = "warmup_timeout_s" if self.preload is not None else "start_timeout_s"
        fix = f"make the warm-up faster or raise SandboxConfig.{setting}"
        if bounded_by_call:
            fix = "make the warm-up faster or give the call a longer timeout"
        return StartFailure(
            Outcome.TIMEOUT,
            "Timeout",
            f"{self._what()} did not finish starting within {timeout:g} s and was killed "
            f"({fix}; the next call tries again)",
        )

    def _malformed_handshake(self, problem: ProtocolError) -> StartFailure:
        return StartFailure(
            Outcome.SANDBOX_FAILURE,
            "ProtocolError",
            f"{self._what()} sent a malformed handshake ({problem}), so the host was killed "
            "(the plugin's import or warm-up code writes to the sandbox's control socket or "
            "patches the sandbox; fix the plugin)",
        )

    def _died_while_starting(self) -> StartFailure:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            code = None
        what = self._what()
        fix = (
            "fix the plugin's import/warm-up; the next call retries it once"
            if self.preload is not None
            else "check the portal's stderr for the host's error"
        )
        if code is not None and code < 0:
            sig = linux.signal_name(-code)
            return StartFailure(
                Outcome.CRASHED if self.preload is not None else Outcome.SANDBOX_FAILURE,
                sig,
                f"{what} killed the sandbox host with {sig} "
                f"({linux.signal_description(-code)}) before it was ready ({fix})",
                signal=sig,
            )
        outcome = Outcome.ERROR if self.preload is not None else Outcome.SANDBOX_FAILURE
        return StartFailure(
            outcome,
            "WarmupExited" if self.preload is not None else "SandboxFailure",
            f"{what} ended the sandbox host with exit code {code} before it was ready ({fix})",
            exit_code=code,
        )

    def _warm_up_raised(self, hello: HelloFields) -> StartFailure:
        kind = hello.get("error_type") or "Exception"
        message = hello.get("message")
        location = hello.get("location")
        detail = f"{kind}: {message}" if message else kind
        where = f" at {location}" if location else ""
        return StartFailure(
            Outcome.ERROR,
            kind,
            f"{self._what()} failed: {detail}{where} (fix the plugin's import/warm-up; the "
            "next call retries it once)",
            traceback=hello.get("traceback"),
        )

    # calls

    def request(
        self, call_id: int, limits: Limits, payload: bytes, name: str, wait_s: float
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        pending = _Pending(limits)
        with self._lock:
            if self._lost is not None:
                raise _NotDelivered(self._lost)
            self._pending[call_id] = pending
        deadline = time.monotonic() + wait_s
        fields = {
            "type": "call",
            "call_id": call_id,
            "limits": limits.as_dict(),
            "target_name": name,
            "result_format": self.config.result_format,
        }
        frames = encode_frame(fields, {"payload": payload})
        if sum(len(frame) for frame in frames) < SMALL_FRAME:
            frames = [b"".join(frames)]  # one send() instead of two for the common call
        try:
            self._send(frames, deadline)
        except _NotDelivered:
            with self._lock:
                self._pending.pop(call_id, None)
            raise
        if not pending.event.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                self._pending.pop(call_id, None)
            reason = (
                f"the sandbox host (pid {self.pid}) did not answer within "
                f"limits.timeout_s + SandboxConfig.grace_s = {wait_s:g} s, so it was killed "
                "and will be restarted on the next call (the host was wedged or the machine "
                "is overloaded)"
            )
            self.kill(reason)
            return {"host_lost": reason}, {}
        assert pending.header is not None
        return pending.header, pending.blobs

    def _send(self, frames: list[bytes | memoryview], deadline: float) -> None:
        # MSG_DONTWAIT + poll: a deadline on writes without putting the shared socket in
        # non-blocking mode under the reader thread's feet.
        assert self.sock is not None  # only started hosts are kept and sent to
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self.kill(f"the sandbox host (pid {self.pid}) stopped accepting requests")
            raise _NotDelivered("the host's connection was busy past the deadline")
        sent_any = False
        try:
            for frame in frames:
                view = memoryview(frame)
                while view:
                    try:
                        sent = self.sock.send(view, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        self._wait_writable(deadline)
                        continue
                    except OSError as exc:
                        if sent_any:
                            self.kill(f"the connection to the host broke mid-request: {exc}")
                            raise _NotDelivered(str(exc)) from None
                        raise _NotDelivered(str(exc)) from None
                    sent_any = True
                    view = view[sent:]
        finally:
            self._send_lock.release()

    def _wait_writable(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.kill(f"the sandbox host (pid {self.pid}) stopped reading requests")
            raise _NotDelivered("the host stopped reading requests")
        poller = select.poll()
        assert self.sock is not None
        poller.register(self.sock.fileno(), select.POLLOUT)
        poller.poll(remaining * 1000)

    def _read_loop(self) -> None:
        reason = "its connection closed"
        assert self.sock is not None  # the reader starts once the handshake succeeded
        try:
            while True:
                frame = _recv_frame(self.sock, self._answer_limits)
                if frame is None:
                    break
                fields, blobs = frame
                header = check_answer(fields)
                with self._lock:
                    pending = self._pending.pop(header["call_id"], None)
                if pending is not None:
                    pending.header, pending.blobs = dict(header), blobs
                    pending.event.set()
        except ProtocolError as exc:
            self._malformed(exc)
            reason = f"it sent a malformed answer ({exc})"
        except Exception as exc:  # any failure here means the host is lost
            reason = f"its connection failed ({type(exc).__name__}: {exc})"
        self._on_lost(reason)

    def _answer_limits(self, fields: dict[str, Any]) -> BlobLimits:
        call_id = fields.get("call_id")
        with self._lock:
            pending = self._pending.get(call_id) if type(call_id) is int else None
        if pending is None:
            raise ProtocolError(f"answer for a call it was not given ({str(call_id)[:40]})")
        return answer_blob_limits(pending.limits)

    def _malformed(self, problem: ProtocolError) -> None:
        """Kill a host that broke the protocol; its running calls say why."""
        message = (
            f"the sandbox host (pid {self.pid}) sent a malformed answer ({problem}), so it "
            "was killed and a new host starts on the next call (if this repeats, the "
            "plugin's import, warm-up or setup() code writes to or patches the sandbox host)"
        )
        with self._lock:
            if self._lost is None:
                self._lost = message
            pendings = list(self._pending.values())
            self._pending.clear()
        log.error("sandbox: %s", message)
        for pending in pendings:
            pending.header = {"host_error": message}
            pending.event.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def _on_lost(self, reason: str) -> None:
        # Lost first, then clean up: a caller must never be handed this host meanwhile.
        with self._lock:
            first = self._lost is None
            if first:
                self._lost = f"the sandbox host (pid {self.pid}) was lost: {reason}"
            pendings = list(self._pending.values())
            self._pending.clear()
        code = self._reap(timeout=STOP_GRACE_S)
        if first:
            with self._lock:
                self._lost = f"the sandbox host (pid {self.pid}) {self._exit_words(code)}"
        lost = self._lost
        self._clean_up()
        if first and pendings:
            log.error("sandbox: %s with %d calls running (%s)", lost, len(pendings), reason)
        message = (
            f"{lost} while the call was running; the call's process died with it and a "
            "new host starts on the next call"
        )
        for pending in pendings:
            pending.header = {"host_lost": message}
            pending.event.set()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()

    def _clean_up(self) -> None:
        """Kill what the host's plugins left running and remove its directories."""
        if self.mark:
            kill_marked(self.mark)
        if self.pid is not None and (self.proc is None or self.proc.poll() is not None):
            _remove_dirs_of(self.pid, self.config)

    def _exit_words(self, code: int | None) -> str:
        if code is None:
            return "stopped answering"
        if code < 0:
            return f"died from {linux.signal_name(-code)}"
        return f"exited with code {code}"

    def _reap(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    # stopping

    def kill(self, reason: str) -> None:
        """Kill a host that misbehaves; its reader thread reports the running calls."""
        with self._lock:
            if self._lost is None:
                self._lost = reason
        log.error("sandbox: killing host %s: %s", self.pid, reason)
        # SIGKILL at once: a wedged (or stopped) host would not act on SIGTERM. Its call
        # children die with it (parent-death signal).
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._shutdown_socket()

    def drain(self) -> None:
        """Let running calls finish, then the host exits (used to reload a Preload)."""
        with self._lock:
            if self._lost is None:
                self._lost = "the host was discarded"
        try:
            self._send(encode_frame({"type": "stop"}), time.monotonic() + STOP_GRACE_S)
        except _NotDelivered:
            self.kill("the discarded host could not be told to stop")

    def stop(self) -> None:
        """Stop now: close the connection (the host kills its calls and exits), then
        terminate -> wait -> kill."""
        with self._lock:
            if self._lost is None:
                self._lost = "the sandbox was shut down"
        self._shutdown_socket()
        if self.proc is not None and self._reap(STOP_GRACE_S) is None:
            self._kill_process()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(STOP_GRACE_S)
        self._clean_up()

    def _shutdown_socket(self) -> None:
        # shutdown() wakes the reader thread with EOF; it closes the socket itself.
        if self.sock is not None:  # None: never started
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def _kill_process(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def abandon(self) -> None:
        """In a forked copy of the portal: forget this host without touching it."""
        try:
            if self.sock is not None:
                os.close(self.sock.detach())
        except OSError:
            pass
        if self.proc is not None:
            self.proc.returncode = 0  # not our child: keep Popen from waiting on it

    def status(self) -> dict[str, Any]:
        with self._lock:
            in_flight = len(self._pending)
        return {
            "preload": None if self.preload is None else dataclasses.asdict(self.preload),
            "pid": self.pid,
            "alive": self.usable and self.proc is not None and self.proc.poll() is None,
            "in_flight": in_flight,
            "warnings": list(self.warnings),
            "started_at": self.started_at,
        }


def _tmp_dir(config: SandboxConfig) -> str:
    """Where a host makes its directories: decided here, so cleanup looks in the same place."""
    return config.tmp_dir or os.environ.get("TMPDIR") or "/tmp"


def _remove_dirs_of(host_pid: int, config: SandboxConfig) -> None:
    """Remove what a host that is gone left in the temporary directory: a host killed
    (SIGKILL, OOM killer) cannot remove its call and bytecode directories itself."""
    tmp_dir = _tmp_dir(config)
    kinds = "|".join(re.escape(kind) for kind in (CALL_DIR_KIND, BYTECODE_DIR_KIND))
    ours = re.compile(rf"(?:{kinds})-{host_pid}-\d+-[0-9a-f]{{6}}")
    owners = {os.geteuid()}
    if config.run_as:
        with contextlib.suppress(KeyError):
            owners.add(pwd.getpwnam(config.run_as).pw_uid)
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
        if stat.S_ISDIR(st.st_mode) and st.st_uid in owners:  # never a symlink, nor another's
            shutil.rmtree(path, ignore_errors=True)


# --- all hosts of this process -----------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Slot:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    host: _Host | None = None
    attempts: int = 0
    last_failure: StartFailure | None = None
    last_used: float = 0.0  # monotonic; picks the warm host to evict


class _Sandbox:
    def __init__(self, config: SandboxConfig) -> None:
        self.pid = os.getpid()
        self.config = config
        self.result_globals = frozenset(config.result_globals)
        self._lock = threading.Lock()
        self._slots: dict[Preload | None, _Slot] = {}
        self._ids = itertools.count(1)

    def call(
        self,
        name: str,
        payload: bytes,
        limits: Limits,
        preload: Preload | None,
        started: float,
    ) -> SandboxResult:
        wait_s = limits.timeout_s + self.config.grace_s
        for attempt in (1, 2):
            host = self._host_for(preload, limits.timeout_s)
            if isinstance(host, StartFailure):
                return host.result(name, _elapsed_ms(started))
            try:
                header, blobs = host.request(next(self._ids), limits, payload, name, wait_s)
            except _NotDelivered as exc:
                # The host died between calls: restart it once, the call never started.
                if attempt == 1:
                    continue
                header, blobs = {"host_lost": f"the sandbox host was lost: {exc}"}, {}
            report = CallReport(name, limits, header, blobs, self.config.result_format)
            return build_result(report, _elapsed_ms(started), self.result_globals, host.warnings)
        raise AssertionError("unreachable")

    def _slot(self, preload: Preload | None) -> _Slot:
        with self._lock:
            slot = self._slots.get(preload)
            if slot is None:
                slot = self._slots[preload] = _Slot()
            return slot

    def _host_for(self, preload: Preload | None, warmup_s: float) -> _Host | StartFailure:
        while True:
            slot = self._slot(preload)
            slot.last_used = time.monotonic()
            host = slot.host
            if host is not None and host.usable:
                return host  # fast path, no lock: usable hosts are only ever replaced
            seen = slot.attempts
            with slot.lock:
                # Discarded (or shut down) since we looked it up: a host started in it
                # would be invisible to discard_preload/shutdown_sandbox. Use the new slot.
                if self._is_registered(preload, slot):
                    return self._start_in(slot, preload, seen, warmup_s)

    def _is_registered(self, preload: Preload | None, slot: _Slot) -> bool:
        with self._lock:
            return self._slots.get(preload) is slot

    def _start_in(
        self, slot: _Slot, preload: Preload | None, seen: int, warmup_s: float
    ) -> _Host | StartFailure:
        """Under ``slot.lock``: the slot's host, or start one (at most one attempt per call)."""
        if slot.host is not None and slot.host.usable:
            return slot.host
        if slot.attempts != seen and slot.last_failure is not None:
            return slot.last_failure  # we waited on someone else's attempt: that was ours
        slot.attempts += 1
        if preload is not None:
            self._evict_warm_hosts(keep=slot)
        host = _Host(preload, self.config)
        failure = host.start(warmup_s)
        slot.host = None if failure else host
        slot.last_failure = failure
        return failure or host

    def _evict_warm_hosts(self, keep: _Slot) -> None:
        """Make room for one more warm host: drain the least recently used idle ones."""
        while True:
            with self._lock:
                warm = [
                    (slot.last_used, key, slot)
                    for key, slot in self._slots.items()
                    if key is not None and slot is not keep and slot.host is not None
                ]
                if len(warm) < self.config.max_warm_hosts:
                    return
                idle = [entry for entry in warm if entry[2].host is not None and entry[2].host.idle]
                if not idle:
                    return  # all busy: exceed the cap rather than make calls wait
                _, key, victim = min(idle, key=lambda entry: entry[0])
            # Never wait on another slot's lock while holding ours (deadlock); a slot whose
            # lock is held is busy starting a host: leave it and exceed the cap for now.
            if not victim.lock.acquire(blocking=False):
                return
            try:
                with self._lock:
                    if self._slots.get(key) is not victim:
                        continue  # discarded meanwhile
                    del self._slots[key]
                host, victim.host = victim.host, None
            finally:
                victim.lock.release()
            if host is not None:
                log.info("sandbox: max_warm_hosts reached, stopping the warm host of %s", key)
                host.drain()

    def discard(self, preload: Preload) -> bool:
        with self._lock:
            slot = self._slots.pop(preload, None)
        if slot is None:
            return False
        with slot.lock:
            host, slot.host = slot.host, None
        if host is None:
            return False
        host.drain()
        return True

    def shutdown(self) -> None:
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            with slot.lock:
                host, slot.host = slot.host, None
            if host is not None:
                host.stop()

    def abandon(self) -> None:
        for slot in self._slots.values():
            if slot.host is not None:
                slot.host.abandon()
        self._slots = {}

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            slots = list(self._slots.values())
        return [slot.host.status() for slot in slots if slot.host is not None]


_CONFIG: SandboxConfig | None = None
_CONFIG_LOCK = threading.Lock()
_SANDBOX: _Sandbox | None = None
_SANDBOX_LOCK = threading.Lock()
_ABANDONED: list[_Sandbox] = []  # inherited from a parent process; kept, never touched


def _config() -> SandboxConfig:
    global _CONFIG
    if _CONFIG is None:
        _CONFIG = SandboxConfig.from_env()
    return _CONFIG


def _current() -> _Sandbox:
    global _SANDBOX
    sandbox = _SANDBOX
    if sandbox is not None and sandbox.pid == os.getpid() and sandbox.config is _CONFIG:
        return sandbox
    if sandbox is not None and sandbox.pid != os.getpid():
        _after_fork_in_child()  # forked by something that bypassed os.register_at_fork
    with _SANDBOX_LOCK:
        with _CONFIG_LOCK:
            config = _config()
        if _SANDBOX is None or _SANDBOX.config is not config:
            old, _SANDBOX = _SANDBOX, _Sandbox(config)
            if old is not None:
                old.shutdown()
        return _SANDBOX


def _after_fork_in_child() -> None:
    """A forked portal (gunicorn pre-fork) must not share its parent's host connections."""
    global _SANDBOX, _SANDBOX_LOCK, _CONFIG_LOCK
    _SANDBOX_LOCK = threading.Lock()  # the parent's may have been held by another thread
    _CONFIG_LOCK = threading.Lock()
    if _SANDBOX is not None and _SANDBOX.pid != os.getpid():
        _SANDBOX.abandon()
        _ABANDONED.append(_SANDBOX)
        _SANDBOX = None


def _shutdown_at_exit() -> None:
    with contextlib.suppress(Exception):  # interpreter teardown; nothing useful to do
        shutdown_sandbox()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_at_exit)
