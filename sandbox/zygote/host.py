"""The sandbox host ("zygote"): a small fresh interpreter that forks one child per call.

Started by the portal as ``python -m sandbox.zygote.host --fd N`` with one end of a socketpair on
fd N; never imported by the portal. It is single-threaded (forking a threaded process is
unsafe) and serves many calls at once from one epoll loop: it forks, enforces each call's
wall-clock deadline, drains output pipes with a cap, reaps, kills whatever the call left
behind and answers. Child exits are watched with pidfds, so the host installs no signal
handlers and its children have none to undo. It is a child subreaper, so descendants that
escape their process group (setsid daemons) are reparented here and killed.

It imports as little as possible (no socket, selectors, tempfile, shutil, dataclasses):
fork time grows with the host's memory, and fork is most of a call's cost.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import faulthandler
import fcntl
import gc
import importlib.machinery
import itertools
import os
import pickle  # only for what the portal sends: the call's target and arguments
import pwd
import resource
import select
import signal
import stat
import sys
import time

from sandbox.zygote import linux
from sandbox.zygote.child import (
    Command,
    MiB,
    SpareSpec,
    _drop_privileges,
    _exception_envelope,
    host_hard_limits,
    pipe_identity,
    resolve_target,
    rlimits_for,
    run_spare,
)
from sandbox.zygote.disk import DiskScan, tree_size
from sandbox.zygote.protocol import (
    BYTECODE_DIR_KIND,
    CALL_DIR_KIND,
    ENVELOPE_LIMIT,
    FRAME_HEADER,
    RESULT_FILE,
    ResultRecord,
    decode_frame,
    decode_result,
    encode_frame,
    frame_sizes,
    record_size,
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: kept out of the host, whose size slows every fork
    import io
    from collections.abc import Callable

READ_CHUNK = 1 << 20
PIPE_SIZE = 1 << 20  # fewer wake-ups for big outputs; silently smaller if not permitted
F_SETPIPE_SZ = 1031
CLEANUP_BUDGET_S = 2.0  # longest a finished call may block the loop killing its leftovers
SWEEP_INTERVAL_S = 0.05
EXIT_GRACE_S = 5.0  # when the portal goes away, how long to wait for calls to die
NO_PIDFD_POLL_S = 0.01  # without pidfd_open (Linux < 5.3), poll for exits this often
IDLE_DIRS = 32  # untouched call directories kept for reuse: mkdir+rmdir on ext4 ~0.5 ms
COMMAND_TIMEOUT_S = 5.0  # a spare that does not read its command in this long is replaced
EXIT_LINGER_S = 1.0  # how long an answered call process may take to finish exiting
# After a fork the host re-copies every page it then writes (copy-on-write), ~200 pages per
# call cycle. While calls keep coming, fork spares in batches (one per call started in the
# last BUSY_WINDOW_S, up to BURST_SPARES) so those copies are paid once per batch, not once
# per call; when calls stop for BUSY_WINDOW_S, drop back to the idle count. A batch holds
# the host, delaying the call in flight: batches of 12 gave ~3% more calls/s than 4, but
# twice the p95 (7 ms against 4).
BURST_SPARES = 4
BUSY_WINDOW_S = 0.5
REHEARSE_UP_TO_CALLS = 1
READY_LOOKS = 3
# A running call's working directory is measured every DISK_CHECK_S, DISK_STEP_ENTRIES
# entries at a time (~2 ms), DISK_STEP_S apart: a tree of a million files delays other calls
# by one step, not by a whole walk.
DISK_CHECK_S = 0.05
DISK_STEP_ENTRIES = 1000
DISK_STEP_S = 0.02
IN = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
IOV_MAX = 1024
CAP_SYS_NICE = 23


class _Tail:
    """Keeps only the last ``cap`` bytes of a stream; counts the rest."""

    __slots__ = ("buffer", "cap", "total")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buffer = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.buffer += data
        if len(self.buffer) > 2 * self.cap:  # trim in batches: O(n) per trim, rarely
            del self.buffer[: -self.cap]

    def value(self) -> bytes:
        return bytes(self.buffer[-self.cap :]) if self.cap else b""


class _Call:
    """One running call: its child, pipes, deadline and what it has said so far."""

    __slots__ = (
        "answered",
        "call_id",
        "calldir",
        "deadline",
        "disk_cap",
        "disk_check_at",
        "disk_exceeded",
        "disk_scan",
        "disk_used",
        "fds",
        "pid",
        "pidfd",
        "proc",
        "result",
        "result_cap",
        "result_overflow",
        "rusage",
        "started",
        "status",
        "stderr",
        "stdout",
        "timed_out",
    )

    def __init__(self, call_id: int, pid: int, calldir: str, limits: dict, fds: dict) -> None:
        self.call_id = call_id
        self.pid = pid
        self.calldir = calldir
        self.fds = fds  # "stdout" / "stderr" / "result" -> our read end
        self.started = time.monotonic()
        self.deadline = self.started + float(limits["timeout_s"])
        disk_mb = limits.get("disk_mb")
        self.disk_cap = int(disk_mb * MiB) if disk_mb else None  # bytes; None: no budget
        # When to measure the working directory next; None once there is nothing to watch.
        self.disk_check_at = self.started + DISK_CHECK_S if disk_mb else None
        self.disk_scan: DiskScan | None = None
        self.disk_used: int | None = None
        self.disk_exceeded = False
        self.result_cap = int(limits["result_bytes"]) + ENVELOPE_LIMIT
        self.stdout = _Tail(int(limits["output_bytes"]))
        self.stderr = _Tail(int(limits["output_bytes"]))
        self.result = bytearray()
        self.result_overflow = False
        self.answered = False  # the portal has its result; the process may still be exiting
        self.timed_out = False
        self.status: int | None = None
        self.rusage: resource.struct_rusage | None = None
        self.pidfd: int | None = None
        self.proc: _ProcFiles | None = None


class _ProcFiles:
    """A process's /proc children and stat files, opened once and re-read with pread():
    a fresh open costs ~0.1 ms on the path that answers a call."""

    __slots__ = ("children_fd", "stat_fd")

    def __init__(self, pid: int) -> None:
        self.children_fd: int | None = None
        self.stat_fd: int | None = None
        try:
            self.children_fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY)
            self.stat_fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        except OSError:  # no /proc or no CONFIG_PROC_CHILDREN: callers take the slow path
            self.close()

    def children(self) -> list[int] | None:
        """Children of the main thread, or None if unknown."""
        if self.children_fd is None:
            return None
        try:
            return [int(p) for p in os.pread(self.children_fd, 1 << 16, 0).split()]
        except OSError:
            return None

    def _stat(self) -> list[bytes] | None:
        """/proc/PID/stat from field 3 (state) on: what follows the ")" ending the name."""
        if self.stat_fd is None:
            return None
        try:
            stat = os.pread(self.stat_fd, 4096, 0)
        except OSError:
            return None
        return stat[stat.rfind(b")") + 2 :].split()

    def single_threaded(self) -> bool:
        fields = self._stat()
        return fields is not None and fields[17] == b"1"  # field 20: num_threads

    def waiting(self) -> bool:
        """Asleep (a spare blocked reading its command), as opposed to still getting ready."""
        fields = self._stat()
        return fields is None or fields[0] == b"S"

    def close(self) -> None:
        for fd in (self.children_fd, self.stat_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.children_fd = self.stat_fd = None


class _Spare:
    """A pre-forked call process waiting on its command pipe."""

    __slots__ = ("calldir", "command_w", "fds", "pid", "pidfd", "proc")

    def __init__(
        self, pid: int, fds: dict, command_w: int, pidfd: int | None, calldir: str
    ) -> None:
        self.pid = pid
        self.fds = fds
        self.command_w = command_w
        self.pidfd = pidfd
        self.calldir = calldir
        self.proc = _ProcFiles(pid)


class Host:
    def __init__(self, ctrl: int, init: dict) -> None:
        self.ctrl = ctrl
        self.init = init
        self.pid = os.getpid()
        self.calls: dict[int, _Call] = {}  # by child pid
        self.finished: collections.deque[_Call] = collections.deque()
        self.answerable: collections.deque[_Call] = collections.deque()  # record complete
        self.poller = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.inbuf = bytearray()
        self.outq: collections.deque[memoryview] = collections.deque()
        self.want_write = False
        self.warnings: list[str] = []
        self.run_as: tuple[int, int] | None = None
        self.own_children: set[int] = set()  # processes a Preload warm-up started on purpose
        self.tmp_dir = init["tmp_dir"]
        self.dir_counter = 0
        self.idle_dirs: list[str] = []
        self.dir_owner = os.geteuid()
        self.base_vsz_mb = 0.0
        self.stopping = False
        self.draining = False
        self.parent_gone = False
        self.sweep_pending = False
        self.children_of = (
            linux.children_of if linux.children_file_supported() else linux.children_by_scan
        )
        self.hard_limits = host_hard_limits()
        self.has_pidfd = hasattr(os, "pidfd_open")
        self.spares: collections.deque[_Spare] = collections.deque()
        self.spare_pids: dict[int, _Spare] = {}
        self.spare_target = max(0, int(init.get("spare_children", 1)))
        # Spares get ready at the lowest priority only if we may raise it back for the call.
        self.priority = os.getpriority(os.PRIO_PROCESS, 0)
        self.low_priority_spares = _may_raise_priority()
        self.proc = _ProcFiles(self.pid)
        # Start times (monotonic) of the latest calls: how busy we are, so how many spares.
        self.recent_calls: collections.deque[float] = collections.deque(maxlen=BURST_SPARES)
        self.refilling = False
        self.pycache_dir: str | None = None

    # --- start-up ------------------------------------------------------------------------

    def prepare(self) -> dict:
        """Set the host up and run the warm-up; the answer is the handshake reply."""
        sys.path[:] = self.init["sys_path"]
        with contextlib.suppress(OSError):
            linux.set_process_name("sandbox-host")
        _warm_import_caches()
        stdio = _configure_stdio()
        try:
            linux.become_child_subreaper()
        except OSError as exc:
            self._warn(f"cannot become child subreaper ({exc}); escaped grandchildren may leak")
        self._isolate_network()
        self._resolve_run_as()
        if self.run_as is not None and self.init.get("preload") is not None:
            self._drop_own_privileges(*self.run_as)
        _restore_plugin_environment(self.init.get("plugin_env", {}))
        self._cache_bytecode()
        failure = self._warm_up()
        _restore_stdio(stdio)  # children write through these; the warm-up may have swapped them
        if failure is not None:
            return {"ok": False, "pid": self.pid, "warnings": self.warnings, **failure}
        self.own_children = set(self.children_of(self.pid))
        gc.collect()
        linux.release_free_memory()  # start-up and warm-up garbage, which forks would copy
        gc.freeze()  # keep the GC from touching (and copying) the host's pages in children
        self.base_vsz_mb = linux.address_space_mb()
        return {
            "ok": True,
            "pid": self.pid,
            "warnings": self.warnings,
            "base_vsz_mb": self.base_vsz_mb,
        }

    def _warm_up(self) -> dict | None:
        preload = self.init.get("preload")
        if preload is None:
            return None
        target, args = preload
        try:
            resolve_target(target)(*args)
        except BaseException as exc:  # reported to the portal, then the host exits
            return _exception_envelope(exc, phase="warmup")
        return None

    def _isolate_network(self) -> None:
        if not self.init.get("no_network"):
            return
        try:
            if os.geteuid() == 0:
                linux.unshare(linux.CLONE_NEWNET)
            else:
                _unshare_user_and_network()
        except OSError as exc:
            self._warn(
                "SANDBOX_NO_NETWORK is set but the network could not be isolated "
                f"({exc}); plugins in this host HAVE network access"
            )

    def _resolve_run_as(self) -> None:
        name = self.init.get("run_as")
        if not name:
            return
        if os.geteuid() != 0:
            self._warn(
                f"SANDBOX_RUN_AS={name} is ignored because the sandbox host is not root "
                f"(uid {os.geteuid()}); plugins run as uid {os.geteuid()}"
            )
            return
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            self._warn(f"SANDBOX_RUN_AS={name} names no such user; plugins run as root")
            return
        self.run_as = (entry.pw_uid, entry.pw_gid)
        self.dir_owner = entry.pw_uid
        unreadable = _unreadable_as(self.run_as, [p for p in sys.path if os.path.exists(p)])
        if unreadable:
            self._warn(
                f"SANDBOX_RUN_AS={name} cannot read {', '.join(unreadable)}; plugins importing "
                "modules from there will fail (make them readable by that user)"
            )

    def _drop_own_privileges(self, uid: int, gid: int) -> None:
        """A warm-up is plugin code: the whole host becomes the unprivileged user before it.
        Its calls then inherit that user; the host serves this one plugin only."""
        _drop_privileges(uid, gid)
        self.run_as = None  # nothing left to drop in the children
        self.low_priority_spares = _may_raise_priority()
        # The kernel clears the death signal when credentials change: arm it again.
        linux.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != self.init["portal_pid"]:
            os._exit(1)

    def _cache_bytecode(self) -> None:
        """Under PYTHONDONTWRITEBYTECODE every call would compile its plugin's source again
        (a fresh process keeps nothing): compile once into a directory private to this host."""
        if not (self.init.get("dont_write_bytecode") and self.init.get("bytecode_cache", True)):
            return
        try:
            self.pycache_dir = self._make_private_dir(BYTECODE_DIR_KIND)
        except OSError as exc:
            self._warn(f"no bytecode cache ({exc}); each call compiles its plugin's source")
            sys.dont_write_bytecode = True  # as the portal asked: write nowhere
            return
        # Children running as SANDBOX_RUN_AS cannot write here (0700, ours): one plugin must
        # not plant bytecode that another plugin's call would then run.
        sys.pycache_prefix = self.pycache_dir
        sys.dont_write_bytecode = False

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        self.log(message)

    def log(self, message: str) -> None:
        with contextlib.suppress(OSError):
            os.write(2, f"sandbox host[{self.pid}]: {message}\n".encode(errors="replace"))

    # --- the loop ------------------------------------------------------------------------

    def serve(self) -> None:
        os.set_blocking(self.ctrl, False)
        self._watch(self.ctrl, IN, self._on_control)
        stop_by = None
        while True:
            if self.stopping:
                if stop_by is None:
                    stop_by = time.monotonic() + EXIT_GRACE_S
                    self._kill_all_calls()
                if not self.calls or time.monotonic() > stop_by:
                    break
            elif self.draining and not self.calls and not self.outq:
                break
            fork_next = self._spare_needed()
            ready = self.poller.poll(0 if fork_next else self._poll_timeout())
            for fd, events in ready:
                handler = self.handlers.get(fd)
                if handler is not None:  # None: closed by an earlier handler in this batch
                    handler(events)
            if fork_next and not ready:  # fork only when nothing else is waiting
                self._add_spares()
            self._trim_spares()
            while self.answerable:
                self._answer_early(self.answerable.popleft())
            self._reap()
            self._expire_calls()
            while self.finished:
                self._complete(self.finished.popleft())
            if self.sweep_pending:
                self._sweep(budget_s=0)
        self._shutdown()

    def _watch(self, fd: int, events: int, handler: Callable[[int], None]) -> None:
        self.poller.register(fd, events)
        self.handlers[fd] = handler

    def _unwatch(self, fd: int) -> None:
        self.handlers.pop(fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.poller.unregister(fd)

    def _poll_timeout(self) -> float:
        if self.stopping or self.sweep_pending:
            return SWEEP_INTERVAL_S
        deadlines = [c.deadline for c in self.calls.values() if c.status is None]
        deadlines += [c.disk_check_at for c in self.calls.values() if c.disk_check_at]
        if len(self.spares) > self.spare_target:  # wake up to trim the burst's extras
            deadlines.append(self._last_call_at() + BUSY_WINDOW_S)
        if not deadlines:
            return -1
        timeout = max(0.0, min(deadlines) - time.monotonic())
        return timeout if self.has_pidfd else min(timeout, NO_PIDFD_POLL_S)

    # --- the portal connection -----------------------------------------------------------

    def _on_control(self, events: int) -> None:
        if events & select.EPOLLOUT:
            self._flush_out()
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        try:
            data = os.read(self.ctrl, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._portal_gone()
            return
        self.inbuf += data
        self._dispatch_frames()

    def _dispatch_frames(self) -> None:
        header = FRAME_HEADER.size
        while len(self.inbuf) >= header:
            text_len, blobs_len = frame_sizes(self.inbuf)
            size = header + text_len + blobs_len
            if len(self.inbuf) < size:
                return
            fields, blobs = decode_frame(self.inbuf[:size])
            del self.inbuf[:size]
            self._handle(fields, blobs)

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
        elif kind == "stop":  # finish running calls, take no new ones, then exit
            self.draining = True
            for spare in list(self.spares):
                self._retire_spare(spare)

    def _portal_gone(self) -> None:
        # The portal exited or closed us: nobody will read results. Kill everything, leave.
        self.parent_gone = True
        self.stopping = True
        self.outq.clear()
        self._unwatch(self.ctrl)

    def _send_answer(self, call_id: int, header: dict, value: bytes | memoryview) -> None:
        """A call's answer: the header's fields as JSON; output, envelope and value as blobs."""
        fields = dict(header, type="result", call_id=call_id)
        blobs = {"value": value}
        for name in ("stdout", "stderr", "envelope"):
            data = fields.pop(name, None)
            if data is not None:
                blobs[name] = data
        self._send(fields, blobs)

    def _send(self, fields: dict, blobs: dict | None = None) -> None:
        if self.parent_gone:
            return
        self.outq.extend(memoryview(b) for b in encode_frame(fields, blobs))
        self._flush_out()

    def _flush_out(self) -> None:
        while self.outq:
            try:
                sent = os.writev(self.ctrl, list(self.outq)[:IOV_MAX])
            except BlockingIOError:
                break
            except OSError:
                self._portal_gone()
                return
            while sent and self.outq:
                head = self.outq[0]
                if sent < len(head):
                    self.outq[0] = head[sent:]
                    break
                sent -= len(head)
                self.outq.popleft()
            else:
                continue
            break  # partial write: the socket is full
        want_write = bool(self.outq)
        if want_write != self.want_write:  # avoid an epoll_ctl per response
            self.want_write = want_write
            with contextlib.suppress(OSError, ValueError):
                self.poller.modify(self.ctrl, IN | (select.EPOLLOUT if want_write else 0))

    # --- spares and starting calls -------------------------------------------------------

    def _last_call_at(self) -> float:
        return self.recent_calls[-1] if self.recent_calls else -BUSY_WINDOW_S

    def _busy(self) -> bool:
        return time.monotonic() - self._last_call_at() < BUSY_WINDOW_S

    def _spare_needed(self) -> bool:
        """Whether to fork a spare now: refill when below the idle count, up to a burst
        while busy."""
        if self.stopping or self.draining or self.spare_target == 0:
            return False
        wanted = self._spares_wanted()
        if len(self.spares) >= wanted:
            self.refilling = False
        elif len(self.spares) < self.spare_target:
            self.refilling = True
        return self.refilling

    def _spares_wanted(self) -> int:
        """The idle count, or one per call started in the last BUSY_WINDOW_S (at most
        BURST_SPARES): a call now and then forks one spare, a stream of calls a batch."""
        if self.spare_target == 0:
            return 0
        since = time.monotonic() - BUSY_WINDOW_S
        recent = sum(1 for started in self.recent_calls if started > since)
        return max(self.spare_target, recent)

    def _add_spares(self) -> None:
        try:
            self.spares.extend(self._fork_spares(max(1, self._spares_wanted() - len(self.spares))))
        except OSError as exc:
            self.refilling = False  # retried when the next call takes a spare
            self.log(f"could not fork a spare call process: {exc}")

    def _trim_spares(self) -> None:
        while len(self.spares) > self.spare_target and not self._busy():
            self._retire_spare(self.spares[-1])

    def _fork_spares(self, count: int) -> list[_Spare]:
        """Fork up to ``count`` spares (at least one, or raise OSError).

        Each fork makes the host copy every page it writes afterwards, so everything that
        can be prepared comes before the forks, which run back to back, and the
        bookkeeping after them touches the host's pages once for the whole batch.
        """
        kits: list[tuple[str, list[tuple[int, int]]]] = []
        try:
            for _ in range(count):
                kits.append(self._spare_kit())
        except OSError:
            if not kits:
                raise
        forked: list[tuple[int, str, list[tuple[int, int]]]] = []
        problem: OSError | None = None
        # Rehearsing takes ~1 ms of CPU per spare: worth it while calls come one at a time,
        # not when several run at once and the CPU is the bottleneck.
        rehearse = len(self.calls) <= REHEARSE_UP_TO_CALLS
        # Built here, not in the children: every object a child makes costs it page copies.
        specs = [
            SpareSpec(
                stdout_w=pipes[0][1],
                stderr_w=pipes[1][1],
                result_w=pipes[2][1],
                result_pipe=pipe_identity(pipes[2][1]),
                result_file=os.path.join(calldir, RESULT_FILE),
                command_r=pipes[3][0],
                host_pid=self.pid,
                calldir=calldir,
                rehearse=rehearse,
                low_priority=self.low_priority_spares,
            )
            for calldir, pipes in kits
        ]
        for spec, (calldir, pipes) in zip(specs, kits, strict=True):
            try:
                pid = os.fork() if problem is None else -1
            except OSError as exc:
                problem, pid = exc, -1
            if pid == 0:
                run_spare(spec)  # never returns
            if pid < 0:  # not forked: give its pipes and directory back
                self._discard_kit(calldir, pipes)
            else:
                forked.append((pid, calldir, pipes))
        if not forked:
            assert problem is not None
            raise problem
        return [self._adopt_spare(pid, calldir, pipes) for pid, calldir, pipes in forked]

    def _spare_kit(self) -> tuple[str, list[tuple[int, int]]]:
        """A spare's working directory and its stdout, stderr, result and command pipes,
        the host's ends already non-blocking and enlarged."""
        calldir = self._take_call_dir()
        pipes: list[tuple[int, int]] = []
        try:
            for _ in range(4):
                pipes.append(os.pipe())
        except OSError:
            self._discard_kit(calldir, pipes)
            raise
        for r, _ in pipes[:3]:
            os.set_blocking(r, False)
            _grow_pipe(r)
        os.set_blocking(pipes[3][1], False)
        _grow_pipe(pipes[3][1])
        return calldir, pipes

    def _discard_kit(self, calldir: str, pipes: list[tuple[int, int]]) -> None:
        for r, w in pipes:
            os.close(r)
            os.close(w)
        self._release_call_dir(calldir)

    def _adopt_spare(self, pid: int, calldir: str, pipes: list[tuple[int, int]]) -> _Spare:
        with contextlib.suppress(OSError):  # the child does it too; first one wins
            os.setpgid(pid, pid)
        for _, w in pipes[:3]:
            os.close(w)  # only the child may hold write ends, so its exit means EOF
        os.close(pipes[3][0])
        fds = {"stdout": pipes[0][0], "stderr": pipes[1][0], "result": pipes[2][0]}
        spare = _Spare(pid, fds, pipes[3][1], self._open_pidfd(pid), calldir)
        self.spare_pids[pid] = spare
        return spare

    def _open_pidfd(self, pid: int) -> int | None:
        # A pidfd turns readable when the child exits: the loop wakes and _reap() runs.
        if not self.has_pidfd:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            self.has_pidfd = False  # old kernel: fall back to polling
            return None
        self._watch(pidfd, select.EPOLLIN, self._ignore_event)
        return pidfd

    def _ignore_event(self, _events: int) -> None:
        pass

    def _retire_spare(self, spare: _Spare, reaped: bool = False) -> None:
        self.spare_pids.pop(spare.pid, None)
        with contextlib.suppress(ValueError):
            self.spares.remove(spare)
        if not reaped:  # a reaped pid may already belong to someone else
            _kill(spare.pid, signal.SIGKILL)
            _reap_soon(spare.pid)  # its pidfd goes now: no event would tell us it died
        for fd in (*spare.fds.values(), spare.command_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if spare.pidfd is not None:
            self._unwatch(spare.pidfd)
            os.close(spare.pidfd)
        spare.proc.close()
        # Only an idle spare is retired, so the directory is empty unless a stranger wrote.
        self._release_call_dir(spare.calldir)

    def _start_call(
        self, call_id: int, limits: dict, payload: bytes, target_name: str, result_format: str
    ) -> None:
        self.recent_calls.append(time.monotonic())
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
        spare = self._hand_over(command)
        if isinstance(spare, str):
            self._send_failure(call_id, f"could not start the call process: {spare}")
            return
        call = _Call(call_id, spare.pid, spare.calldir, limits, spare.fds)
        call.pidfd = spare.pidfd
        call.proc = spare.proc
        self.calls[spare.pid] = call
        for name, fd in call.fds.items():
            self._watch(fd, IN, self._pipe_reader(call, name))

    def _hand_over(self, command: list[bytes]) -> _Spare | str:
        """Give the command to a spare (forking one if none is ready); or say why not."""
        problem = "no spare call process"
        for _ in range(3):  # a spare may have died while idle: try another
            if not self.spares:  # a batch: calls are arriving faster than spares
                try:
                    self.spares.extend(self._fork_spares(max(1, self._spares_wanted())))
                except OSError as exc:
                    return str(exc)
            spare = self._ready_spare()
            try:
                if self.low_priority_spares:
                    os.setpriority(os.PRIO_PROCESS, spare.pid, self.priority)
                _write_with_deadline(spare.command_w, command, COMMAND_TIMEOUT_S)
            except OSError as exc:
                problem = f"the spare call process did not take its command ({exc})"
                self._retire_spare(spare)
                continue
            self.spare_pids.pop(spare.pid, None)
            os.close(spare.command_w)
            return spare
        return problem

    def _ready_spare(self) -> _Spare:
        """The oldest spare that has finished getting ready (of the first few), else the
        oldest: under load they are all still busy, and each look costs a /proc read."""
        for spare in itertools.islice(self.spares, READY_LOOKS):
            if spare.proc.waiting():
                self.spares.remove(spare)
                return spare
        return self.spares.popleft()

    def _take_call_dir(self) -> str:
        if self.idle_dirs:
            return self.idle_dirs.pop()
        path = self._make_private_dir(CALL_DIR_KIND)
        if self.run_as is not None:
            os.chown(path, *self.run_as)
        return path

    def _release_call_dir(self, path: str) -> None:
        """Keep a directory the call left exactly as made (empty, 0700, ours); else rm -rf."""
        if len(self.idle_dirs) < IDLE_DIRS and _is_pristine(path, self.dir_owner):
            self.idle_dirs.append(path)
        else:
            _remove_tree(path)

    def _make_private_dir(self, prefix: str) -> str:
        while True:
            path = self._new_dir_name(prefix)
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                continue

    def _new_dir_name(self, prefix: str) -> str:
        """A path in the temporary directory no directory of ours had: the counter makes
        it unique for this host, the pid among hosts, the random part against guessing."""
        self.dir_counter += 1
        name = f"{prefix}-{self.pid}-{self.dir_counter}-{os.urandom(3).hex()}"
        return os.path.join(self.tmp_dir, name)

    def _park_call_dir(self, call: _Call) -> None:
        """Before an early answer: the directory the call saw must be gone when the portal
        has its result, but removing it costs ~0.15 ms and its reuse would be lost. A
        rename does both; the directory is checked and reused or removed once the call
        process has been reaped."""
        parked = self._new_dir_name(CALL_DIR_KIND)
        if os.path.lexists(parked):
            return  # cannot happen for a fresh counter; then the normal cleanup does it
        try:
            os.rename(call.calldir, parked)
        except OSError:
            return
        call.calldir = parked

    def _pipe_reader(self, call: _Call, name: str):
        def on_readable(_events: int) -> None:
            self._read_pipe(call, name)

        return on_readable

    def _read_pipe(self, call: _Call, name: str) -> bool:
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

    def _add_result(self, call: _Call, data: bytes) -> None:
        if call.result_overflow:
            return
        call.result += data
        if len(call.result) > call.result_cap:
            # Only a plugin writing to fd 3 itself gets here: the child checks result_bytes.
            call.result_overflow = True
            call.result = bytearray()
            self._kill_group(call.pid, wait=False)
            return
        try:
            size = record_size(call.result)
        except ValueError:
            return  # garbage: the normal path reports it once the process is gone
        if size == len(call.result) and not call.answered:
            self.answerable.append(call)

    def _answer_early(self, call: _Call) -> None:
        """Answer as soon as the child's record is complete, without waiting ~0.5 ms for
        the kernel to tear its memory down; only when the call left no other process (it
        has no children and nothing new was reparented to us), so nothing it started is
        running once the portal has its answer. Otherwise the normal path answers."""
        if call.answered or call.status is not None or call.timed_out or call.proc is None:
            return
        if call.proc.children() != [] or not call.proc.single_threaded():
            return  # a child (or a thread that may have one): wait until all are gone
        if not self._only_known_children():
            return  # an orphan, perhaps this call's (it may have exited already): ditto
        self._measure_disk_at_end(call)
        if call.disk_exceeded:  # answered once reaped, after its files are gone
            self._kill_group(call.pid, wait=False)  # not reaped yet: the pid is still its own
            return
        # It is at the end of its exit path, in our code; should it linger (a plugin's
        # signal handler, say), its deadline now kills it. Not killed at once: a process
        # may still do useful work on its way out (coverage measurement saves its data).
        call.deadline = min(call.deadline, time.monotonic() + EXIT_LINGER_S)
        self._park_call_dir(call)
        for name in ("stdout", "stderr"):  # what it printed is in the pipes already
            while self._read_pipe(call, name):
                pass
        header, value = self._response(call)
        call.answered = True
        self._send_answer(call.call_id, header, value)
        for name in list(call.fds):  # nobody will read more: spare the loop three EOF wake-ups
            self._close_pipe(call, name)

    def _only_known_children(self) -> bool:
        """Whether every child of ours is a call process, a spare or a warm-up's own."""
        ours = self.proc.children()  # the main thread's: orphans are reparented to it
        if ours is None:
            return False
        return all(
            pid in self.calls or pid in self.spare_pids or pid in self.own_children for pid in ours
        )

    def _close_pipe(self, call: _Call, name: str) -> None:
        fd = call.fds.pop(name, None)
        if fd is not None:
            self._unwatch(fd)
            os.close(fd)

    # --- ending calls --------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            call = self.calls.get(pid)
            if call is not None and call.status is None:
                call.status, call.rusage = status, rusage
                self.finished.append(call)
            elif pid in self.spare_pids:  # died while idle (killed from outside?)
                self.log(f"spare call process {pid} died while idle; replacing it")
                self._retire_spare(self.spare_pids[pid], reaped=True)
            else:
                self.sweep_pending = True  # an escaped descendant died; its children are ours

    def _expire_calls(self) -> None:
        """Kill calls past their deadline; measure the working directories that are due."""
        now = time.monotonic()
        for call in self.calls.values():
            if call.status is not None or call.timed_out:
                continue
            if now >= call.deadline:
                call.timed_out = True
                self._kill_group(call.pid, wait=False)
            elif call.disk_check_at is not None and now >= call.disk_check_at:
                self._measure_disk_step(call, now)

    def _measure_disk_step(self, call: _Call, now: float) -> None:
        """One step of measuring a running call's working directory; past its budget the
        call's process group is killed."""
        assert call.disk_cap is not None  # only calls with a budget are measured
        if call.disk_scan is None:
            call.disk_scan = DiskScan(call.calldir)
        scan = call.disk_scan
        done = scan.step(DISK_STEP_ENTRIES)
        if scan.total > call.disk_cap:
            self._over_disk_budget(call, scan.total)
            self._kill_group(call.pid, wait=False)
            return
        if done:
            call.disk_used = scan.total
            scan.restart()
        call.disk_check_at = now + (DISK_CHECK_S if done else DISK_STEP_S)

    def _measure_disk_at_end(self, call: _Call) -> None:
        """Measure the whole directory of a call that is done: what it wrote since the last
        look counts too. An empty directory costs one scandir."""
        if call.disk_cap is None or call.disk_exceeded:
            return
        if call.disk_scan is not None:
            call.disk_scan.close()
        call.disk_check_at = None
        used = tree_size(call.calldir)
        if used > call.disk_cap:
            self._over_disk_budget(call, used)
        else:
            call.disk_used = used

    def _over_disk_budget(self, call: _Call, used: int) -> None:
        call.disk_used = used
        call.disk_exceeded = True
        call.disk_check_at = None
        if call.disk_scan is not None:
            call.disk_scan.close()

    def _kill_all_calls(self) -> None:
        for call in self.calls.values():
            self._kill_group(call.pid, wait=False)

    def _kill_group(self, pgid: int, wait: bool = True) -> None:
        """SIGKILL the call's process group; with ``wait``, until no member is left."""
        if not wait:
            _kill(pgid, signal.SIGKILL)  # the running leader, in case it left its group
        give_up = time.monotonic() + CLEANUP_BUDGET_S
        while True:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return
            except PermissionError:
                return  # pgid reused by a process we do not own: it is not ours any more
            if not wait:
                return
            self._reap()  # members orphaned by the kill are our (zombie) children now
            if time.monotonic() > give_up:
                self.log(f"process group {pgid} survived SIGKILL for {CLEANUP_BUDGET_S}s")
                self.sweep_pending = True
                return
            time.sleep(0.001)

    def _complete(self, call: _Call) -> None:
        if call.pidfd is not None:
            self._unwatch(call.pidfd)
            os.close(call.pidfd)
            call.pidfd = None
        if call.proc is not None:
            call.proc.close()
        self._kill_group(call.pid)
        self._drain(call)
        self._sweep(budget_s=CLEANUP_BUDGET_S)
        if not call.answered:
            self._measure_disk_at_end(call)
            header, value = self._response(call)
            if call.disk_exceeded:
                _remove_tree(call.calldir)  # the space is free when the portal hears of it
            self._send_answer(call.call_id, header, value)
        self._release_call_dir(call.calldir)
        del self.calls[call.pid]

    def _drain(self, call: _Call) -> None:
        # The child is dead and its group killed: what it wrote is in the pipe buffers.
        # Stop at "nothing more now" rather than EOF: an escaped process may hold the pipe.
        for name in list(call.fds):
            for _ in range(1024):
                if not self._read_pipe(call, name):
                    break
            self._close_pipe(call, name)

    def _sweep(self, budget_s: float) -> None:
        """Kill processes reparented to us that no running call owns."""
        give_up = time.monotonic() + budget_s
        while True:
            killed = self._kill_escaped()
            self._reap()
            if not killed:
                self.sweep_pending = False
                return
            if time.monotonic() >= give_up:
                self.sweep_pending = True  # keep sweeping from the loop
                return
            time.sleep(0.001)

    def _kill_escaped(self) -> int:
        running = {c.pid for c in self.calls.values() if c.status is None}
        killed = 0
        for pid in self.children_of(self.pid):
            if pid in running or pid in self.own_children or pid in self.spare_pids:
                continue
            try:
                if os.getpgid(pid) in running:
                    continue  # a running call's own process, orphaned inside its group
            except ProcessLookupError:
                continue
            _kill(pid, signal.SIGKILL)
            killed += 1
        return killed

    def _response(self, call: _Call) -> tuple[dict, bytes]:
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
        header = {
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "timed_out": call.timed_out,
            "disk_exceeded": call.disk_exceeded,
            "disk_used": call.disk_used,
            "cpu_s": cpu_s,
            "peak_rss_kb": peak_rss_kb,
            "run_s": time.monotonic() - call.started,
            "stdout": call.stdout.value(),
            "stdout_total": call.stdout.total,
            "stderr": call.stderr.value(),
            "stderr_total": call.stderr.total,
            "envelope": envelope,
            "result_problem": problem,
            "base_vsz_mb": self.base_vsz_mb,
            "host_pid": self.pid,
        }
        return header, value

    def _read_result(self, call: _Call) -> tuple[ResultRecord | None, str | None]:
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
        self._send_answer(call_id, {"host_error": reason, "host_pid": self.pid}, b"")

    def _shutdown(self) -> None:
        for spare in list(self.spares):
            self._retire_spare(spare)
        self._kill_all_calls()
        for call in list(self.calls.values()):
            for name in list(call.fds):
                self._close_pipe(call, name)
            if call.pidfd is not None:
                os.close(call.pidfd)
            if call.proc is not None:
                call.proc.close()
            _remove_tree(call.calldir)
        for path in self.idle_dirs:
            _remove_tree(path)
        if self.pycache_dir is not None:
            _remove_tree(self.pycache_dir)
        self._reap()
        self._sweep(budget_s=1.0)


def _may_raise_priority() -> bool:
    """Whether we may set a process's nice value back to ours after lowering it: with
    CAP_SYS_NICE, or an RLIMIT_NICE that allows it."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    nice_limit = resource.getrlimit(resource.RLIMIT_NICE)[0]
    if nice_limit == resource.RLIM_INFINITY or nice_limit >= 20 - ours:
        return True
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except OSError:
        pass
    return False


def _reap_soon(pid: int, budget_s: float = 1.0) -> None:
    """Reap a child just sent SIGKILL (an idle spare dies within a millisecond); one that
    takes longer is left to the loop's _reap()."""
    give_up = time.monotonic() + budget_s
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] or time.monotonic() > give_up:
                return
        except ChildProcessError:
            return
        time.sleep(0.0002)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _write_with_deadline(fd: int, buffers: list[bytes], seconds: float) -> None:
    """Write everything to a non-blocking fd or raise: a stopped or wedged reader must not
    block the host. Usually one writev() does it."""
    total = sum(len(b) for b in buffers)
    try:
        written = os.writev(fd, buffers)
    except BlockingIOError:
        written = 0
    if written == total:
        return
    rest = memoryview(b"".join(buffers))[written:]
    deadline = time.monotonic() + seconds
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while rest:
        try:
            rest = rest[os.write(fd, rest) :]
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(errno.ETIMEDOUT, "the reader stopped reading") from None
            poller.poll(remaining * 1000)


def _grow_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


def _is_pristine(path: str, owner: int) -> bool:
    try:
        st = os.lstat(path)
        with os.scandir(path) as entries:
            empty = next(entries, None) is None
    except OSError:
        return False
    return (
        empty
        and stat.S_ISDIR(st.st_mode)
        and stat.S_IMODE(st.st_mode) == 0o700
        and st.st_uid == owner
    )


def _remove_tree(root: str) -> None:
    """rm -rf without shutil (and without recursion: a plugin may nest deeply)."""
    stack = [(root, False)]
    while stack:
        path, emptied = stack.pop()
        if emptied:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            continue
        stack.append((path, True))
        entries: list[os.DirEntry] = []
        try:
            entries = list(os.scandir(path))
        except PermissionError:  # a plugin running as us made it unreadable
            with contextlib.suppress(OSError):
                os.chmod(path, 0o700)
                entries = list(os.scandir(path))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, False))
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _restore_plugin_environment(values: dict[str, str | None]) -> None:
    """Put back the variables the portal changed only to start this host."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _configure_stdio() -> tuple[io.TextIOWrapper, io.TextIOWrapper]:
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


def _restore_stdio(stdio: tuple[io.TextIOWrapper, io.TextIOWrapper]) -> None:
    # Flush what a warm-up printed, so it is not repeated in every child's output.
    for stream in (sys.stdout, sys.stderr, *stdio):
        with contextlib.suppress(Exception):
            stream.flush()
    sys.stdout, sys.stderr = stdio
    # typeshed marks sys.__stdout__/__stderr__ Final; the host repoints them on purpose.
    sys.__stdout__, sys.__stderr__ = stdio  # type: ignore[misc]


def _warm_import_caches() -> None:
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


def _adopt_control_fd(fd: int) -> int:
    # Move the socket above 0-2 so dup2() onto the std fds in children cannot clobber it,
    # then make sure 0-2 are open (a daemonised portal may have closed them).
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    for std in (0, 1, 2):
        try:
            os.fstat(std)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # lowest free fd: exactly `std`
    return high


def _read_frame_blocking(fd: int) -> tuple[dict, dict[str, bytes]] | None:
    def read_exact(size: int) -> bytes | None:
        data = bytearray()
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    header = read_exact(FRAME_HEADER.size)
    if header is None:
        return None
    text_len, blobs_len = frame_sizes(header)
    rest = read_exact(text_len + blobs_len)
    return None if rest is None else decode_frame(header + rest)


def _write_blocking(fd: int, buffers: list[bytes | memoryview]) -> None:
    for buffer in buffers:
        view = memoryview(buffer)
        while view:
            view = view[os.write(fd, view) :]


def main(argv: list[str]) -> int:
    try:
        fd = int(argv[argv.index("--fd") + 1])
    except (ValueError, IndexError):
        print("usage: python -m sandbox.zygote.host --fd N", file=sys.stderr)
        return 2
    # Die with the portal even while a warm-up (plugin code) keeps this process busy. The
    # portal starts hosts from one long-lived thread: the signal follows the forking thread.
    linux.set_parent_death_signal(signal.SIGKILL)
    ctrl = _adopt_control_fd(fd)
    frame = _read_frame_blocking(ctrl)
    if frame is None or frame[0].get("type") != "init":
        return 2
    fields, blobs = frame
    if os.getppid() != fields["portal_pid"]:
        return 1  # the portal died before the death signal was armed
    if "preload" in blobs:
        fields["preload"] = pickle.loads(blobs["preload"])  # from the portal: trusted
    host = Host(ctrl, fields)
    hello = host.prepare()
    _write_blocking(ctrl, encode_frame(dict(hello, type="hello")))
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
