"""One host process and its connection: start and handshake, requests, answers, loss.

Thread-safe: any number of portal threads may call at once. Each host has one socket;
callers write requests under a lock and wait on their own Event; one reader thread per host
hands answers out by call id. Callers never block on I/O without a deadline, so a wedged
host costs them at most ``timeout_s + grace_s`` before it is killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import select
import socket
import subprocess
import threading
import time
from typing import Any

from sandbox.cancel import CancelToken
from sandbox.config import SandboxConfig
from sandbox.limits import Limits
from sandbox.portal.host_init import host_environment, host_tmp_dir, init_message
from sandbox.portal.leftovers import kill_marked, remove_dirs_of
from sandbox.portal.spawn import spawner
from sandbox.portal.start_failure import (
    StartFailure,
    died_while_starting,
    malformed_handshake,
    not_spawned,
    start_timeout,
    warm_up_raised,
)
from sandbox.portal.wire import (
    BlobLimits,
    CallHeader,
    answer_blob_limits,
    answered_call,
    check_answer,
    check_hello,
    lost_call,
    no_blobs,
    recv_frame,
)
from sandbox.targets import Preload
from sandbox.zygote import linux
from sandbox.zygote.protocol import ProtocolError, encode_frame

__all__ = ["HostConnection", "NotDelivered", "host_tmp_dir"]

log = logging.getLogger("sandbox")

HOST_MODULE = "sandbox.zygote.host"  # what a host runs, as `python -P -m HOST_MODULE`
STOP_GRACE_S = 2.0  # terminate -> wait -> kill, for hosts
SMALL_FRAME = 64 * 1024  # below this, joining a frame's parts is cheaper than a 2nd syscall


class NotDelivered(Exception):
    """The request never reached the host (it was already gone): safe to retry."""


@dataclasses.dataclass(eq=False)
class _Pending:
    limits: Limits
    event: threading.Event = dataclasses.field(default_factory=threading.Event)
    header: CallHeader | None = None
    blobs: dict[str, bytes] = dataclasses.field(default_factory=dict)


class HostConnection:
    """One running host process and its connection."""

    module = HOST_MODULE  # what the process runs (a resident process runs its own module)
    noun = "sandbox host"  # what log lines and reasons call it (a resident process its own)

    def __init__(self, preload: Preload | None, config: SandboxConfig) -> None:
        self.preload = preload
        self.config = config
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.pid: int | None = None
        self.warnings: list[str] = []
        self.plugin_env: dict[str, str | None] = {}  # what plugins get of HOST_ONLY_CHANGES
        self.base_vsz_mb: float | None = None
        self.started_at = time.time()
        self._lock = threading.Lock()  # guards _pending and _lost
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._lost: str | None = None
        self._reader: threading.Thread | None = None
        self.mark = ""  # SANDBOX_OWNER of this host and of everything its plugins start
        self.import_hint: str | None = None  # why imports may fail in this host's calls
        self._warmup_output: tuple[str, str] | None = None  # (stdout, stderr), for one call
        self.warmup_value: object = None  # what the Preload's warm-up returned (JSON data)
        self.memory: tuple[str | None, str | None] = (None, None)  # mechanism, why not cgroups

    @property
    def python(self) -> str:
        """The interpreter this host runs with: its Preload's own, or the configured one."""
        if self.preload is not None and self.preload.python is not None:
            return self.preload.python
        return self.config.python

    def _host_environment(self) -> dict[str, str]:
        env, self.plugin_env = host_environment(self.preload, self.config, self.mark)
        return env

    def take_warmup_output(self) -> tuple[str, str] | None:
        """What the warm-up wrote (stdout, stderr): handed to the first call that asks."""
        with self._lock:
            output, self._warmup_output = self._warmup_output, None
        return output if output and any(output) else None

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
        starter = spawner(self.config.python, host_tmp_dir(self.config))
        self.mark = starter.mark()
        try:
            self.proc = starter.popen(
                [self.python, "-P", "-m", self.module, "--fd", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                env=self._host_environment(),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # terminal signals are for the portal, not the host
                **self._spawn_options(),
            )
        except OSError as exc:
            parent_sock.close()
            return not_spawned(exc)
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
            log.warning("%s %s: %s", self.noun, self.pid, warning)
        return None

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
            message = self._init_message()
            for buffer in encode_frame(message, blobs):
                self.sock.sendall(buffer)
            frame = recv_frame(self.sock, no_blobs)
            self.sock.settimeout(None)
            hello = None if frame is None else check_hello(frame[0])
        except TimeoutError:
            return start_timeout(self.preload, timeout, bounded_by_call=timeout == warmup_s)
        except ProtocolError as exc:
            return malformed_handshake(self.preload, exc)
        except OSError:
            hello = None
        if hello is None:
            return died_while_starting(self.preload, self._reap(STOP_GRACE_S))
        if not hello["ok"]:
            return warm_up_raised(self.preload, hello)
        self.warnings = list(hello["warnings"] or [])
        self.base_vsz_mb = hello["base_vsz_mb"]
        self.memory = (hello["memory_mechanism"], hello["memory_fallback"])
        self._warmup_output = (hello["warmup_stdout"] or "", hello["warmup_stderr"] or "")
        self.warmup_value = hello["warmup_value"]
        unreadable = hello["unreadable"] or []
        if unreadable:
            self.import_hint = (
                f"SANDBOX_RUN_AS={self.config.run_as} cannot read {', '.join(unreadable)}: "
                "make the plugin's code and what it imports readable by that user"
            )
        return None

    def _spawn_options(self) -> dict[str, Any]:
        """More Popen options: a resident process's stdout and stderr files."""
        return {}

    def _init_message(self) -> dict[str, Any]:
        return init_message(self.preload, self.config, self.plugin_env)

    # calls

    def request(
        self,
        call_id: int,
        limits: Limits,
        payload: bytes,
        name: str,
        wait_s: float,
        cancel: CancelToken | None = None,
    ) -> tuple[CallHeader, dict[str, bytes]]:
        pending = _Pending(limits)
        # A host that already died may still have a spare (forked just before, not yet
        # scheduled) holding its socket open: a request written now would be lost in flight
        # instead of retried. One waitpid tells.
        if self.proc is not None and self.proc.poll() is not None:
            with self._lock:
                if self._lost is None:
                    self._lost = f"the sandbox host (pid {self.pid}) is gone"
        with self._lock:
            if self._lost is not None:
                raise NotDelivered(self._lost)
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
        except NotDelivered:
            with self._lock:
                self._pending.pop(call_id, None)
            raise
        forget = cancel.on_cancel(lambda: self._cancel(call_id)) if cancel else lambda: None
        try:
            answered = pending.event.wait(max(0.0, deadline - time.monotonic()))
        finally:
            forget()
        if not answered:
            with self._lock:
                self._pending.pop(call_id, None)
            reason = (
                f"the sandbox host (pid {self.pid}) did not answer within "
                f"limits.timeout_s + SandboxConfig.grace_s = {wait_s:g} s, so it was killed "
                "and will be restarted on the next call (the host was wedged or the machine "
                "is overloaded)"
            )
            self.kill(reason)
            return lost_call(reason), {}
        assert pending.header is not None
        return pending.header, pending.blobs

    def _send(self, frames: list[bytes | memoryview], deadline: float) -> None:
        # MSG_DONTWAIT + poll: a deadline on writes without putting the shared socket in
        # non-blocking mode under the reader thread's feet.
        assert self.sock is not None  # only started hosts are kept and sent to
        if not self._send_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self.kill(f"the {self.noun} (pid {self.pid}) stopped accepting requests")
            raise NotDelivered("the host's connection was busy past the deadline")
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
                            raise NotDelivered(str(exc)) from None
                        # Lost now, not when the reader thread gets to it: the retry must
                        # be handed a new host, never this one again.
                        with self._lock:
                            if self._lost is None:
                                self._lost = f"its connection failed ({exc})"
                        raise NotDelivered(str(exc)) from None
                    sent_any = True
                    view = view[sent:]
        finally:
            self._send_lock.release()

    def _cancel(self, call_id: int) -> None:
        """Ask the host to kill the call's process group; it answers the call as cancelled."""
        with self._lock:
            if call_id not in self._pending or self._lost is not None:
                return  # answered meanwhile, or the host is gone (the call with it)
        with contextlib.suppress(NotDelivered):  # the host is lost: its reader reports the call
            self._send(encode_frame({"type": "cancel", "call_id": call_id}), time.monotonic() + 5)

    def _wait_writable(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.kill(f"the {self.noun} (pid {self.pid}) stopped reading requests")
            raise NotDelivered("the host stopped reading requests")
        poller = select.poll()
        assert self.sock is not None
        poller.register(self.sock.fileno(), select.POLLOUT)
        poller.poll(remaining * 1000)

    def _read_loop(self) -> None:
        reason = "its connection closed"
        assert self.sock is not None  # the reader starts once the handshake succeeded
        try:
            while True:
                frame = recv_frame(self.sock, self._answer_limits)
                if frame is None:
                    break
                fields, blobs = frame
                header = check_answer(fields)
                with self._lock:
                    pending = self._pending.pop(header["call_id"], None)
                if pending is not None:
                    pending.header, pending.blobs = answered_call(header), blobs
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
            f"the {self.noun} (pid {self.pid}) sent a malformed answer ({problem}), so it "
            "was killed and a new one starts on the next call (if this repeats, the "
            f"plugin's import, warm-up or setup() code writes to or patches the {self.noun})"
        )
        with self._lock:
            if self._lost is None:
                self._lost = message
            pendings = list(self._pending.values())
            self._pending.clear()
        log.error("sandbox: %s", message)
        for pending in pendings:
            pending.header = lost_call(message)
            pending.event.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def _on_lost(self, reason: str) -> None:
        # Lost first, then clean up: a caller must never be handed this host meanwhile.
        with self._lock:
            first = self._lost is None
            if first:
                self._lost = f"the {self.noun} (pid {self.pid}) was lost: {reason}"
            pendings = list(self._pending.values())
            self._pending.clear()
        code = self._reap(timeout=STOP_GRACE_S)
        if first:
            with self._lock:
                self._lost = f"the {self.noun} (pid {self.pid}) {self._exit_words(code)}"
        lost = self._lost
        self._clean_up()
        if first and pendings:
            calls = f"{len(pendings)} call{'s' if len(pendings) != 1 else ''}"
            log.error("sandbox: %s with %s running (%s)", lost, calls, reason)
        message = (
            f"{lost} while the call was running; the call's process died with it and a "
            "new host starts on the next call"
        )
        for pending in pendings:
            pending.header = lost_call(message)
            pending.event.set()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()

    def _clean_up(self) -> None:
        """Kill what the host's plugins left running and remove its directories."""
        if self.mark:
            kill_marked(self.mark)
        if self.pid is not None and (self.proc is None or self.proc.poll() is not None):
            remove_dirs_of(self.pid, host_tmp_dir(self.config), self.config.run_as)

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
        log.error("sandbox: killing %s %s: %s", self.noun, self.pid, reason)
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
        except NotDelivered:
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
            "memory_mechanism": self.memory[0],
            "memory_fallback": self.memory[1],
        }
