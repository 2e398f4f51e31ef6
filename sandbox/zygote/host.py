"""The sandbox host ("zygote"): a small fresh interpreter that forks one child per call.

Started by the portal as ``python -P -m sandbox.zygote.host --fd N`` with one end of a
socketpair on fd N; never imported by the portal. It is single-threaded (forking a threaded
process is unsafe) and serves many calls at once from one epoll loop: it forks, enforces
each call's wall-clock deadline, drains output pipes with a cap, reaps, kills whatever the
call left behind and answers. Child exits are watched with pidfds, so the host installs no
signal handlers and its children have none to undo. It is a child subreaper, so
descendants that escape their process group (setsid daemons) are reparented here and
killed.

    portal ──frames──▶ PortalLink ──▶ Host._start_call ──command──▶ SparePool ──▶ spare
                                          │                                         │
    portal ◀──answer── PortalLink ◀── Host._response ◀── pipes, fd 3 record ◀── call process
                                          └─ Reaper: wait4, kill the group, sweep orphans

``Host`` wires the collaborators (startup, portal_link, spares, calldirs, reaper) and owns
the calls' lifecycle; ``main()`` is the process. It imports as little as possible (see
sandbox/zygote/__init__.py): fork time, most of a call's cost, grows with the host's memory.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import gc
import os
import sys
import time

from sandbox.zygote import cgroup, linux, startup
from sandbox.zygote.calldirs import CallDirs, remove_tree
from sandbox.zygote.calls import Call
from sandbox.zygote.child import Command, host_hard_limits, rlimits_for
from sandbox.zygote.poller import IN, Poller
from sandbox.zygote.portal_link import PortalLink, receive_init, write_blocking
from sandbox.zygote.protocol import (
    CALL_DIR_KIND,
    RESULT_FILE,
    decode_result,
    encode_frame,
    record_size,
)
from sandbox.zygote.reaper import CLEANUP_BUDGET_S, Reaper
from sandbox.zygote.spares import SparePool, may_raise_priority

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: kept out of the host, whose size slows every fork
    from sandbox.messages import AnswerFields, HelloFields
    from sandbox.zygote.portal_link import Blobs
    from sandbox.zygote.protocol import ResultRecord

READ_CHUNK = 1 << 20
SWEEP_INTERVAL_S = 0.05
EXIT_GRACE_S = 5.0  # when the portal goes away, how long to wait for calls to die
NO_PIDFD_POLL_S = 0.01  # without pidfd_open (Linux < 5.3), poll for exits this often
EXIT_LINGER_S = 1.0  # how long an answered call process may take to finish exiting


class Host:
    def __init__(self, ctrl: int, init: dict) -> None:
        self.init = init
        self.pid = os.getpid()
        self.calls: dict[int, Call] = {}  # by child pid
        self.finished: collections.deque[Call] = collections.deque()
        self.answerable: collections.deque[Call] = collections.deque()  # record complete
        self.poller = Poller()
        self.link = PortalLink(ctrl, self.poller, self._handle, self._portal_gone)
        self.warnings: list[str] = []
        self.unreadable: list[str] = []  # sys.path entries the run_as user cannot read
        self.run_as: tuple[int, int] | None = None  # the user each call process drops to
        self.base_vsz_mb = 0.0
        self.stopping = False
        self.draining = False
        self.hard_limits = host_hard_limits()
        self.dirs = CallDirs(init["tmp_dir"], self.pid, CALL_DIR_KIND)
        self.spares = SparePool(
            self.pid,
            int(init.get("spare_children", 1)),
            self.calls,
            self.dirs,
            self.poller,
            self.log,
        )
        self.reaper = Reaper(self.pid, self.calls, self.finished, self.spares, self.log)
        self.pycache_dir: str | None = None
        self.memory = cgroup.MemoryControl(init.get("cgroup"), self.pid)  # memory_mb's mechanism

    # --- start-up ------------------------------------------------------------------------

    def prepare(self) -> HelloFields:
        """Set the host up and run the warm-up; the answer is the handshake reply."""
        init = self.init
        if init["sys_path"] is not None:  # None: a plugin's own interpreter keeps its own
            sys.path[:] = init["sys_path"]
        with contextlib.suppress(OSError):
            linux.set_process_name("sandbox-host")
        startup.warm_import_caches()
        stdio = startup.configure_stdio()
        try:
            linux.become_child_subreaper()
        except OSError as exc:
            self._warn(f"cannot become child subreaper ({exc}); escaped grandchildren may leak")
        if init.get("no_network"):
            startup.isolate_network(self._warn)
        if init.get("run_as"):
            self._run_as(startup.resolve_run_as(init["run_as"], self._warn, self.unreadable))
        startup.restore_plugin_environment(init.get("plugin_env", {}))
        if init.get("dont_write_bytecode") and init.get("bytecode_cache", True):
            self.pycache_dir = startup.cache_bytecode(self.dirs, self._warn)
        output: dict[str, object] = {}
        failure = startup.warm_up(init.get("preload"), output)
        startup.restore_stdio(stdio)  # children write through these; a warm-up may swap them
        if failure is None and init.get("preload") is not None and startup.cuda_initialized():
            failure = startup.cuda_refusal()  # every call would fork from it: use resident mode
        if failure is not None:
            refusal: HelloFields = {"ok": False, "pid": self.pid, "warnings": self.warnings}
            refusal.update(failure)
            refusal.update(output)  # type: ignore[typeddict-item]
            return refusal
        self.reaper.own_children = set(self.reaper.children_of(self.pid))
        gc.collect()
        linux.release_free_memory()  # start-up and warm-up garbage, which forks would copy
        gc.freeze()  # keep the GC from touching (and copying) the host's pages in children
        self.base_vsz_mb = linux.address_space_mb()
        hello = self.memory.hello()  # ok, pid, and how memory_mb is enforced
        hello.update({"warnings": self.warnings, "unreadable": self.unreadable})
        hello["base_vsz_mb"] = self.base_vsz_mb
        hello.update(output)  # type: ignore[typeddict-item]  # warmup_stdout, _stderr, _value
        return hello

    def _run_as(self, user: tuple[int, int] | None) -> None:
        if user is None:
            return
        self.dirs.owner = user[0]
        if self.init.get("preload") is None:
            self.run_as = self.dirs.chown_to = user  # each call process drops to it
            return
        # A warm host serves one plugin: it becomes the user itself, before the warm-up.
        startup.drop_own_privileges(*user, portal_pid=self.init["portal_pid"])
        self.spares.low_priority = may_raise_priority()

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self.log(message)

    def log(self, message: str) -> None:
        with contextlib.suppress(OSError):
            os.write(2, f"sandbox host[{self.pid}]: {message}\n".encode(errors="replace"))

    # --- the loop ------------------------------------------------------------------------

    def serve(self) -> None:
        self.link.start()
        stop_by = None
        while True:
            if self.stopping:
                if stop_by is None:
                    stop_by = time.monotonic() + EXIT_GRACE_S
                    self.reaper.kill_all_calls()
                if not self.calls or time.monotonic() > stop_by:
                    break
            elif self.draining and not self.calls and not self.link.sending:
                break
            fork_next = self.spares.needed()
            ready = self.poller.poll(0 if fork_next else self._poll_timeout())
            if fork_next and not ready:  # fork only when nothing else is waiting
                self.spares.add()
            self.spares.trim()
            while self.answerable:
                self._answer_early(self.answerable.popleft())
            self.reaper.reap()
            self._expire_calls()
            while self.finished:
                self._complete(self.finished.popleft())
            if self.reaper.sweep_pending:
                self.reaper.sweep(budget_s=0)
        self._shutdown()

    def _poll_timeout(self) -> float:
        if self.stopping or self.reaper.sweep_pending:
            return SWEEP_INTERVAL_S
        deadlines = [c.deadline for c in self.calls.values() if c.status is None]
        deadlines += [at for c in self.calls.values() if (at := c.next_check_at()) is not None]
        trim_at = self.spares.trim_deadline()  # wake up to trim the burst's extras
        if trim_at is not None:
            deadlines.append(trim_at)
        if not deadlines:
            return -1
        timeout = max(0.0, min(deadlines) - time.monotonic())
        return timeout if self.spares.has_pidfd else min(timeout, NO_PIDFD_POLL_S)

    # --- what the portal says ------------------------------------------------------------

    def _handle(self, fields: dict, blobs: dict[str, bytes]) -> None:
        kind = fields["type"]
        if kind == "call":
            self._start_call(
                fields["call_id"],
                fields["limits"],
                blobs["payload"],
                fields["target_name"],
                fields.get("result_format", "json"),
            )
        elif kind == "cancel":
            self.reaper.cancel(fields["call_id"])
        elif kind == "stop":  # finish running calls, take no new ones, then exit
            self.draining = True
            self.spares.closed = True
            self.spares.retire_all()

    def _portal_gone(self) -> None:
        # Nobody will read results: kill everything, leave.
        self.stopping = True
        self.spares.closed = True

    # --- starting calls ------------------------------------------------------------------

    def _start_call(
        self, call_id: int, limits: dict, payload: bytes, target_name: str, result_format: str
    ) -> None:
        self.spares.note_call()
        if self.stopping or self.draining:
            self._send_failure(call_id, "the sandbox host is shutting down; retry the call")
            return
        command = Command(
            payload=payload,
            rlimits=rlimits_for(limits, self.hard_limits),
            result_bytes=int(limits["result_bytes"]),
            result_format=result_format,
            run_as=self.run_as,
            target_name=target_name,
        ).encode()
        group = self.memory.group_for(limits)
        spare = self.spares.hand_over(command, group.join if group else None)
        if isinstance(spare, str):
            self.memory.discard(group)  # else each such call would leave an empty cgroup
            self._send_failure(call_id, f"could not start the call process: {spare}")
            return
        call = Call(call_id, spare.pid, spare.calldir, limits, spare.fds)
        self.memory.attach(call, group)
        call.pidfd = spare.pidfd
        call.proc = spare.proc
        self.calls[spare.pid] = call
        for name, fd in call.fds.items():
            self.poller.watch(fd, IN, self._pipe_reader(call, name))

    def _pipe_reader(self, call: Call, name: str):
        def on_readable(_events: int) -> None:
            self._read_pipe(call, name)

        return on_readable

    def _read_pipe(self, call: Call, name: str) -> bool:
        """Read one chunk; False when nothing more is available now."""
        fd = call.fds.get(name)
        if fd is None:
            return False
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._close_pipe(call, name)
            return False
        if name == "result":
            self._add_result(call, data)
        else:
            getattr(call, name).add(data)
        return True

    def _add_result(self, call: Call, data: bytes) -> None:
        if call.result_overflow:
            return
        call.result += data
        if len(call.result) > call.result_cap:
            # Only a plugin writing to fd 3 itself gets here: the child checks result_bytes.
            call.result_overflow = True
            call.result = bytearray()
            self.reaper.kill_group(call.pid, wait=False)
            return
        try:
            size = record_size(call.result)
        except ValueError:
            return  # garbage: the normal path reports it once the process is gone
        if size == len(call.result) and not call.answered:
            self.answerable.append(call)

    def _close_pipe(self, call: Call, name: str) -> None:
        fd = call.fds.pop(name, None)
        if fd is not None:
            self.poller.unwatch(fd)
            os.close(fd)

    # --- ending calls --------------------------------------------------------------------

    def _answer_early(self, call: Call) -> None:
        """Answer as soon as the child's record is complete, without waiting ~0.5 ms for
        the kernel to tear its memory down; only when the call left no other process (it
        has no children and nothing new was reparented to us), so nothing it started is
        running once the portal has its answer. Otherwise the normal path answers."""
        if call.answered or call.status is not None or call.timed_out or call.proc is None:
            return
        if call.proc.children() != [] or not call.proc.single_threaded():
            return  # a child (or a thread that may have one): wait until all are gone
        if not self.reaper.only_known_children():
            return  # an orphan, perhaps this call's (it may have exited already): ditto
        call.measure_disk_at_end()
        if call.disk_exceeded:  # answered once reaped, after its files are gone
            self.reaper.kill_group(call.pid, wait=False)  # not reaped: the pid is its own
            return
        # It is at the end of its exit path, in our code; should it linger (a plugin's
        # signal handler, say), its deadline now kills it. Not killed at once: a process
        # may still do useful work on its way out (coverage measurement saves its data).
        call.deadline = min(call.deadline, time.monotonic() + EXIT_LINGER_S)
        call.calldir = self.dirs.park(call.calldir)
        for name in ("stdout", "stderr"):  # what it printed is in the pipes already
            while self._read_pipe(call, name):
                pass
        fields, blobs = self._response(call)
        call.answered = True
        self.link.send_answer(call.call_id, fields, blobs)
        for name in list(call.fds):  # nobody will read more: spare the loop three EOF wake-ups
            self._close_pipe(call, name)

    def _expire_calls(self) -> None:
        """Kill calls past their deadline; measure the disk and memory use that is due."""
        now = time.monotonic()
        for call in self.calls.values():
            if call.status is not None or call.timed_out:
                continue
            if now >= call.deadline:
                call.timed_out = True
                self.reaper.kill_group(call.pid, wait=False)
            elif call.over_budget(now):
                self.reaper.kill_group(call.pid, wait=False)

    def _complete(self, call: Call) -> None:
        if call.pidfd is not None:
            self.poller.unwatch(call.pidfd)
            os.close(call.pidfd)
            call.pidfd = None
        if call.proc is not None:
            call.proc.close()
        self.reaper.kill_group(call.pid)
        self._drain(call)
        self.reaper.sweep(budget_s=CLEANUP_BUDGET_S)
        if not call.answered:
            call.measure_disk_at_end()
            header, value = self._response(call)
            if call.disk_exceeded:
                remove_tree(call.calldir)  # the space is free when the portal hears of it
            self.link.send_answer(call.call_id, header, value)
        self.dirs.release(call.calldir)
        self.memory.release(call)
        del self.calls[call.pid]

    def _drain(self, call: Call) -> None:
        # The child is dead and its group killed: what it wrote is in the pipe buffers.
        # Stop at "nothing more now" rather than EOF: an escaped process may hold the pipe.
        for name in list(call.fds):
            for _ in range(1024):
                if not self._read_pipe(call, name):
                    break
            self._close_pipe(call, name)

    def _response(self, call: Call) -> tuple[AnswerFields, Blobs]:
        # Not reaped yet (an early answer): the record's own exit intent and usage stand in.
        status = call.status if call.status is not None else 0
        rusage = call.rusage
        record, problem = self._read_result(call)
        envelope, value = (record.envelope, record.value) if record else (None, b"")
        cpu_s: float | None
        peak_rss_kb: int | None
        if rusage is not None:
            cpu_s, peak_rss_kb = rusage.ru_utime + rusage.ru_stime, rusage.ru_maxrss
        elif record is not None:
            cpu_s, peak_rss_kb = record.cpu_s, record.peak_rss_kb
        else:
            cpu_s = peak_rss_kb = None
        fields: AnswerFields = {
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "timed_out": call.timed_out,
            "cancelled": call.cancelled,
            "disk_exceeded": call.disk_exceeded,
            "disk_used": call.disk_used,
            "memory_exceeded": call.memory_exceeded,
            "memory_peak_kb": call.memory_peak_kb,
            "cpu_s": cpu_s,
            "peak_rss_kb": peak_rss_kb,
            "run_s": time.monotonic() - call.started,
            "stdout_total": call.stdout.total,
            "stderr_total": call.stderr.total,
            "result_problem": problem,
            "base_vsz_mb": self.base_vsz_mb,
            "host_pid": self.pid,
        }
        self.memory.report(call, fields)
        blobs: Blobs = {
            "value": value,
            "stdout": call.stdout.value(),
            "stderr": call.stderr.value(),
        }
        if envelope is not None:
            blobs["envelope"] = envelope
        return fields, blobs

    def _read_result(self, call: Call) -> tuple[ResultRecord | None, str | None]:
        if call.result_overflow:
            return None, "the plugin flooded the sandbox's result channel (fd 3)"
        problem = None
        if call.result:
            try:
                return decode_result(call.result), None
            except ValueError as exc:
                problem = f"the result channel (fd 3) held garbage: {exc}"
        fallback = os.path.join(call.calldir, RESULT_FILE)
        try:
            with open(fallback, "rb") as handle:
                data = handle.read(call.result_cap + 1)
            return decode_result(data), None
        except FileNotFoundError:
            return None, problem
        except (OSError, ValueError) as exc:
            return None, f"the fallback result file was unreadable: {exc}"

    def _send_failure(self, call_id: int, reason: str) -> None:
        self.log(reason)
        self.link.send_answer(call_id, {"host_error": reason, "host_pid": self.pid}, {"value": b""})

    def _shutdown(self) -> None:
        self.spares.retire_all()
        self.reaper.kill_all_calls()
        for call in list(self.calls.values()):
            for name in list(call.fds):
                self._close_pipe(call, name)
            if call.pidfd is not None:
                os.close(call.pidfd)
            if call.proc is not None:
                call.proc.close()
            remove_tree(call.calldir)
        self.dirs.remove_idle()
        if self.pycache_dir is not None:
            remove_tree(self.pycache_dir)
        self.reaper.reap()
        self.reaper.sweep(budget_s=1.0)


def main(argv: list[str]) -> int:
    received = receive_init(argv, "sandbox.zygote.host")
    if isinstance(received, int):
        return received
    ctrl, fields = received
    host = Host(ctrl, fields)
    hello = host.prepare()
    write_blocking(ctrl, encode_frame(dict(hello, type="hello")))
    if not hello["ok"]:
        host._shutdown()
        return 1
    try:
        host.serve()
    except BaseException:
        host.log("crashed; killing its calls")
        host._shutdown()
        raise
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise
        sys.exit(1)  # the portal went away mid-handshake
