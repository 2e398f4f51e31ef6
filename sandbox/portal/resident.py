"""Resident mode: a Preload's calls run inside long-lived processes that ran its warm-up once.

Runs in the portal. One ``ResidentPool`` per Preload with a ``Resident`` policy holds up to
``concurrency`` processes (``python -m sandbox.zygote.resident``), each running one call at a
time. This side enforces a call's limits, since the process itself runs plugin code:

    caller ──acquire──▶ idle process, or start one (after the crash backoff) ──call frame──▶
    caller ◀─ answer (checked as a host's) ◀── resident process        the caller's thread
              waits for the answer, samples the process tree's RSS and CPU time
              (sandbox/portal/resident_watch.py) and kills the process group past
              timeout_s, memory_mb or cpu_s; the outcome is then built from how the
              process ended, as a fork-mode call's is.

A process that died (crashed, killed for a limit, exited) is replaced by the next call after
``Resident.backoff_after(crashes in a row)``; more than ``max_restarts`` deaths within
``restart_window_s`` and calls are refused (outcome ``crashed``, limit ``max_restarts``). One is
retired (told to stop) after ``max_calls`` calls or a call that leaves its RSS past
``max_memory_mb``, as Celery's max_tasks_per_child and max_memory_per_child do.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from sandbox.cancel import CancelToken
from sandbox.config import SandboxConfig
from sandbox.limits import Limits
from sandbox.portal.connection import HostConnection, _Pending
from sandbox.portal.host_init import host_tmp_dir
from sandbox.portal.outcome import (
    CallReport,
    build_result,
    cancelled_before_start,
    elapsed_ms,
    failure_result,
)
from sandbox.portal.resident_watch import CpuWatch, MemoryWatch, next_wait
from sandbox.portal.wire import CallHeader, answered_call, check_answer, lost_call
from sandbox.result import Outcome, SandboxResult
from sandbox.targets import Preload, Resident
from sandbox.zygote.proc import ProcFiles
from sandbox.zygote.protocol import ProtocolError, encode_frame

__all__ = ["RESIDENT", "ResidentPool"]

RESIDENT = "resident"  # SandboxResult.mode of a call a resident process ran
RESIDENT_MODULE = "sandbox.zygote.resident"
EXIT_WAIT_S = 2.0  # after a kill, how long the reader thread may take to see the process go


class ResidentProcess(HostConnection):
    """One resident process: the host connection's start, handshake and answers, with its
    output in files and its calls' limits enforced here."""

    module = RESIDENT_MODULE
    noun = "resident process"

    def __init__(self, preload: Preload, config: SandboxConfig, limits: Limits) -> None:
        super().__init__(preload, config)
        self.limits = limits  # of the call that started it: its rlimits, for its whole life
        self.calls = 0
        self.malformed = False
        self.proc_files: ProcFiles | None = None  # its /proc files, opened once it runs
        # Unlinked files, so nothing is left on disk however this ends; O_APPEND, so emptying
        # them between calls does not leave the process writing past a hole.
        self.outputs = {
            # Open for the process's life: close_files() closes them.
            name: tempfile.TemporaryFile(dir=host_tmp_dir(config))  # noqa: SIM115
            for name in ("stdout", "stderr")
        }
        for handle in self.outputs.values():
            flags = fcntl.fcntl(handle.fileno(), fcntl.F_GETFL)
            fcntl.fcntl(handle.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)

    def _spawn_options(self) -> dict[str, Any]:
        return {name: handle.fileno() for name, handle in self.outputs.items()}

    def _init_message(self) -> dict[str, Any]:
        return dict(super()._init_message(), limits=self.limits.as_dict())

    def _malformed(self, problem: ProtocolError) -> None:
        self.malformed = True
        super()._malformed(problem)

    def _files(self) -> ProcFiles:
        """Its /proc files, opened on first use and kept until close_files()."""
        if self.proc_files is None:
            assert self.pid is not None
            self.proc_files = ProcFiles(self.pid)
        return self.proc_files

    def rss_kb(self) -> int | None:
        return self._files().rss_kb()

    def run(
        self,
        call_id: int,
        limits: Limits,
        payload: bytes,
        name: str,
        cancel: CancelToken | None = None,
    ) -> tuple[CallHeader, dict[str, bytes]]:
        """One call: its answer, or how the process ended while it ran (a cancel kills it)."""
        for handle in self.outputs.values():
            os.ftruncate(handle.fileno(), 0)
        pending = _Pending(limits)
        with self._lock:
            if self._lost is not None:
                return lost_call(self._lost), {}
            self._pending[call_id] = pending
        started = time.monotonic()
        deadline = started + limits.timeout_s
        fields = {
            "type": "call",
            "call_id": call_id,
            "limits": limits.as_dict(),
            "target_name": name,
            "result_format": self.config.result_format,
        }
        assert self.pid is not None
        files = self._files()
        cpu = CpuWatch(files, limits.cpu_s) if limits.cpu_s else None  # its baseline: now
        try:
            self._send(encode_frame(fields, {"payload": payload}), deadline)
        except Exception:  # NotDelivered or a broken socket: the reader reports the loss
            self.kill_group("its connection failed")
        watch = MemoryWatch(files, self.pid, limits.memory_mb) if limits.memory_mb else None
        timed_out = memory_exceeded = False
        # The process runs one call at a time, so a cancel kills the whole process group.
        forget = cancel.on_cancel(self._cancelled) if cancel is not None else None
        try:
            while not pending.event.wait(next_wait(deadline, watch, cpu)):
                if time.monotonic() >= deadline:
                    timed_out = True
                elif watch is not None and watch.exceeded():
                    memory_exceeded = True
                elif cpu is None or not cpu.exceeded():
                    continue
                # Past cpu_s, a SIGKILL with the CPU time used is what fork mode's limit reports.
                self.kill_group("its call ran into a limit")
                pending.event.wait(EXIT_WAIT_S)
                break
        finally:
            if forget is not None:
                forget()
        self.calls += 1
        header = pending.header
        blobs = pending.blobs
        if header is None or header["host_lost"] is not None:
            cancelled = cancel is not None and cancel.cancelled
            header, blobs = self._ended(
                call_id, header, timed_out, memory_exceeded, watch, cancelled=cancelled
            )
            if cpu is not None:
                header["cpu_s"] = cpu.used_s
            header["run_s"] = time.monotonic() - started
        if watch is not None and header["memory_peak_kb"] is None:
            header["memory_peak_kb"] = watch.peak_kb or None
        return header, {**blobs, **self._output(limits, header)}

    def _ended(
        self,
        call_id: int,
        header: CallHeader | None,
        timed_out: bool,
        memory_exceeded: bool,
        watch: MemoryWatch | None,
        *,
        cancelled: bool,
    ) -> tuple[CallHeader, dict[str, bytes]]:
        """The header of a call whose process ended under it, from how it ended."""
        code = self._reap(EXIT_WAIT_S)
        if code is None:
            self.kill_group("it did not end after its call was lost")
            code = self._reap(EXIT_WAIT_S)
        if self.malformed and header is not None:
            return header, {}
        fields = {
            "type": "result",
            "call_id": call_id,
            "exit_code": code if code is not None and code >= 0 else None,
            "signal": -code if code is not None and code < 0 else None,
            "timed_out": timed_out,
            "memory_exceeded": memory_exceeded,
            "memory_peak_kb": watch.peak_kb if watch is not None else None,
            "host_pid": self.pid,
            "cancelled": cancelled,
        }
        return answered_call(check_answer(fields)), {}

    def _output(self, limits: Limits, header: CallHeader) -> dict[str, bytes]:
        """The tails of what the call wrote, from the output files; their sizes as totals."""
        tails = {}
        for name, handle in self.outputs.items():
            size = os.fstat(handle.fileno()).st_size
            cap = limits.output_bytes
            tails[name] = os.pread(handle.fileno(), cap, max(0, size - cap)) if cap else b""
            header["stdout_total" if name == "stdout" else "stderr_total"] = size
        return tails

    def _cancelled(self) -> None:
        self.kill_group("its call was cancelled")

    def kill_group(self, reason: str) -> None:
        """SIGKILL the process and whatever it started in its session."""
        with self._lock:
            if self._lost is None:
                self._lost = f"the resident process (pid {self.pid}) was killed: {reason}"
        if self.pid is not None and self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._shutdown_socket()

    def close_files(self) -> None:
        """Its output files and /proc files: once it has ended or been told to stop."""
        for handle in self.outputs.values():
            handle.close()
        if self.proc_files is not None:
            self.proc_files.close()


class ResidentPool:
    """The resident processes of one Preload, their crash backoff and their recycling."""

    def __init__(
        self,
        preload: Preload,
        config: SandboxConfig,
        result_globals: frozenset[str],
        make_room: Callable[[ResidentPool], None] | None = None,
    ):
        assert preload.resident is not None
        self.preload = preload
        self.policy: Resident = preload.resident
        self.config = config
        self.result_globals = result_globals
        self.make_room = make_room  # before a start: the cap on warm processes (pool.py)
        self.last_used = 0.0  # monotonic; picks the warm processes to evict
        self._cond = threading.Condition()
        self._idle: list[ResidentProcess] = []
        self._busy: set[ResidentProcess] = set()
        self._starting = 0
        self._deaths: collections.deque[float] = collections.deque()  # monotonic, in window
        self._in_a_row = 0
        self._last_death = 0.0
        self._closed = threading.Event()

    def call(
        self,
        name: str,
        payload: bytes,
        limits: Limits,
        started: float,
        call_id: int,
        cancel: CancelToken | None = None,
    ) -> SandboxResult:
        if cancel is not None and cancel.cancelled:  # before a process start, which may be slow
            return cancelled_before_start(name, elapsed_ms(started))
        self.last_used = time.monotonic()
        proc = self._acquire(name, limits, started)
        if isinstance(proc, SandboxResult):
            return proc
        try:
            header, blobs = proc.run(call_id, limits, payload, name, cancel)
        finally:
            # A cancel killed the process on purpose: not a crash the backoff counts.
            self._release(
                proc, died=not proc.usable, counted=not (cancel is not None and cancel.cancelled)
            )
        report = CallReport(name, limits, header, blobs, self.config.result_format)
        result = build_result(report, elapsed_ms(started), self.result_globals, proc.warnings)
        result.warmup_value = proc.warmup_value
        warmup = proc.take_warmup_output()
        if warmup is not None:  # the process started for this call: its warm-up's output too
            result.stdout = (warmup[0] + result.stdout)[-limits.output_bytes :]
            result.stderr = (warmup[1] + result.stderr)[-limits.output_bytes :]
        return result

    # --- processes ---------------------------------------------------------------------

    def _acquire(
        self, name: str, limits: Limits, started: float
    ) -> ResidentProcess | SandboxResult:
        deadline = time.monotonic() + limits.timeout_s
        with self._cond:
            while True:
                if self._closed.is_set():
                    return self._refused(name, started, "its resident processes were discarded")
                if self._idle:
                    proc = self._idle.pop()
                    self._busy.add(proc)
                    return proc
                if len(self._busy) + self._starting < self.policy.concurrency:
                    self._starting += 1
                    break
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    return failure_result(
                        name,
                        Outcome.TIMEOUT,
                        "Timeout",
                        f"Plugin call {name!r} waited limits.timeout_s = {limits.timeout_s:g} s "
                        f"for one of its {self.policy.concurrency} resident processes, all busy "
                        "(raise Resident.concurrency, or send fewer calls at once)",
                        elapsed_ms(started),
                        limit="timeout_s",
                    )
        try:
            return self._start(name, limits, started)
        finally:
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()

    def _start(self, name: str, limits: Limits, started: float) -> ResidentProcess | SandboxResult:
        with self._cond:
            refusal = self._crash_loop(name, started)
            wait_s = self.policy.backoff_after(self._in_a_row) - (
                time.monotonic() - self._last_death
            )
        if refusal is not None:
            return refusal
        if wait_s > 0 and self._closed.wait(wait_s):  # backing off after crashes
            return self._refused(name, started, "its resident processes were discarded")
        if self.make_room is not None:
            self.make_room(self)
        proc = ResidentProcess(self.preload, self.config, limits)
        failure = proc.start(limits.timeout_s)
        if failure is not None:
            proc.close_files()
            with self._cond:
                self._died()
            return failure.result(name, elapsed_ms(started))
        with self._cond:
            if self._closed.is_set():
                proc.stop()
                proc.close_files()
                return self._refused(name, started, "its resident processes were discarded")
            self._busy.add(proc)
        return proc

    def _release(self, proc: ResidentProcess, *, died: bool, counted: bool = True) -> None:
        retire = False
        if not died:
            rss_kb = proc.rss_kb()
            over = self.policy.max_memory_mb is not None and (rss_kb or 0) > (
                self.policy.max_memory_mb * 1024
            )
            retire = over or proc.calls >= self.policy.max_calls or self._closed.is_set()
        with self._cond:
            self._busy.discard(proc)
            if died:
                if counted:
                    self._died()
            else:
                self._in_a_row = 0
                if not retire:
                    self._idle.append(proc)
            self._cond.notify_all()
        if died:
            proc.stop()  # reaped already: this cleans up what it left
            proc.close_files()
        elif retire:
            proc.drain()
            proc.close_files()

    def _died(self) -> None:
        """Under the lock: a process died (or failed to start); the next start backs off."""
        now = time.monotonic()
        self._deaths.append(now)
        self._in_a_row += 1
        self._last_death = now

    def _crash_loop(self, name: str, started: float) -> SandboxResult | None:
        """Under the lock: the refusal while deaths in the window are more than allowed."""
        now = time.monotonic()
        window = self.policy.restart_window_s
        while self._deaths and self._deaths[0] < now - window:
            self._deaths.popleft()
        deaths = len(self._deaths)
        if deaths <= self.policy.max_restarts:
            return None
        until_s = self._deaths[0] + window - now
        return failure_result(
            name,
            Outcome.CRASHED,
            "CrashLoop",
            f"The resident process of plugin call {name!r} ended abnormally {deaths} times in "
            f"the last {window:g} s, more than Resident.max_restarts ({self.policy.max_restarts}), "
            f"so it is not restarted for {until_s:.0f} s (fix what the earlier calls' outcomes "
            "and stderr show; discarding the Preload restarts it at once)",
            elapsed_ms(started),
            limit="max_restarts",
        )

    def _refused(self, name: str, started: float, why: str) -> SandboxResult:
        return failure_result(
            name,
            Outcome.SANDBOX_FAILURE,
            "SandboxFailure",
            f"Plugin call {name!r} was not run: {why} (retry the call: it starts new ones)",
            elapsed_ms(started),
        )

    # --- the pool's life ---------------------------------------------------------------

    def close(self, *, drain: bool) -> None:
        """Stop taking calls; idle processes stop now, busy ones once their call ends."""
        self._closed.set()
        with self._cond:
            idle, self._idle = self._idle, []
            busy = list(self._busy)
            self._cond.notify_all()
        for proc in idle:
            proc.drain() if drain else proc.stop()
            proc.close_files()
        if not drain:
            for proc in busy:
                proc.kill_group("the sandbox was shut down")

    def processes(self) -> int:
        """How many processes it runs (idle or busy), for SandboxConfig.max_warm_hosts."""
        with self._cond:
            return len(self._idle) + len(self._busy)

    def evictable(self) -> bool:
        """Whether it has processes and all of them are idle (none busy, none starting)."""
        with self._cond:
            return bool(self._idle) and not self._busy and not self._starting

    def evict(self) -> bool:
        """Stop its processes if all are still idle; the next call starts one anew (after no
        backoff: an eviction is no crash). False if a call took one meanwhile."""
        with self._cond:
            if self._busy or self._starting or not self._idle:
                return False
            idle, self._idle = self._idle, []
        for proc in idle:
            proc.drain()
            proc.close_files()
        return True

    def abandon(self) -> None:
        with self._cond:
            procs = self._idle + list(self._busy)
        for proc in procs:
            proc.abandon()

    def status(self) -> list[dict[str, Any]]:
        with self._cond:
            procs = self._idle + list(self._busy)
        return [dict(proc.status(), mode=RESIDENT, calls=proc.calls) for proc in procs]
