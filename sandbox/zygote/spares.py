"""Spares: call processes a host forks ahead of time, each waiting on its command pipe.

Fork and setup are thus off a call's critical path. After a fork the host re-copies every
page it then writes (copy-on-write), ~200 pages per call cycle. While calls keep coming,
spares are forked in batches (one per call started in the last BUSY_WINDOW_S, up to
BURST_SPARES) so those copies are paid once per batch, not once per call; when calls stop
for BUSY_WINDOW_S, the pool drops back to the idle count. A batch holds the host, delaying
the call in flight: batches of 12 gave ~3% more calls/s than 4, but twice the p95 (7 ms
against 4).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import os
import resource
import select
import signal
import time

from sandbox.zygote.child import SpareSpec, pipe_identity, run_spare
from sandbox.zygote.poller import wake_only
from sandbox.zygote.proc import ProcFiles
from sandbox.zygote.protocol import RESULT_FILE

LOWEST_PRIORITY = 19  # nice value of a spare while it gets ready

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: kept out of the host, whose size slows every fork
    from collections.abc import Callable

    from sandbox.zygote.calldirs import CallDirs
    from sandbox.zygote.calls import Call
    from sandbox.zygote.poller import Poller

    Kit = tuple[str, list[tuple[int, int]]]  # a working directory and four pipes

BURST_SPARES = 4
BUSY_WINDOW_S = 0.5
REHEARSE_UP_TO_CALLS = 1
READY_LOOKS = 3
COMMAND_TIMEOUT_S = 5.0  # a spare that does not read its command in this long is replaced
PIPE_SIZE = 1 << 20  # fewer wake-ups for big outputs; silently smaller if not permitted
F_SETPIPE_SZ = 1031
CAP_SYS_NICE = 23


class Spare:
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
        self.proc = ProcFiles(pid)


class SparePool:
    """The host's spares: forked while it is idle (or in batches while it is busy), handed a
    call's command, retired when not needed. ``calls`` is the host's table of running calls
    (its size decides whether spares rehearse)."""

    def __init__(
        self,
        host_pid: int,
        target: int,
        calls: dict[int, Call],
        dirs: CallDirs,
        poller: Poller,
        log: Callable[[str], None],
    ) -> None:
        self.host_pid = host_pid
        self.target = max(0, target)
        self.calls = calls
        self.dirs = dirs
        self.poller = poller
        self.log = log
        self.spares: collections.deque[Spare] = collections.deque()
        self.by_pid: dict[int, Spare] = {}
        # Start times (monotonic) of the latest calls: how busy we are, so how many spares.
        self.recent_calls: collections.deque[float] = collections.deque(maxlen=BURST_SPARES)
        self.refilling = False
        self.closed = False  # the host is stopping or draining: fork no more
        self.has_pidfd = hasattr(os, "pidfd_open")
        # Spares get ready at the lowest priority only if we may raise it back for the call.
        self.priority = os.getpriority(os.PRIO_PROCESS, 0)
        self.low_priority = may_raise_priority()

    # --- how many ------------------------------------------------------------------------

    def note_call(self) -> None:
        self.recent_calls.append(time.monotonic())

    def _last_call_at(self) -> float:
        return self.recent_calls[-1] if self.recent_calls else -BUSY_WINDOW_S

    def _busy(self) -> bool:
        return time.monotonic() - self._last_call_at() < BUSY_WINDOW_S

    def needed(self) -> bool:
        """Whether to fork a spare now: refill when below the idle count, up to a burst
        while busy."""
        if self.closed or self.target == 0:
            return False
        wanted = self._wanted()
        if len(self.spares) >= wanted:
            self.refilling = False
        elif len(self.spares) < self.target:
            self.refilling = True
        return self.refilling

    def _wanted(self) -> int:
        """The idle count, or one per call started in the last BUSY_WINDOW_S (at most
        BURST_SPARES): a call now and then forks one spare, a stream of calls a batch."""
        if self.target == 0:
            return 0
        since = time.monotonic() - BUSY_WINDOW_S
        recent = sum(1 for started in self.recent_calls if started > since)
        return max(self.target, recent)

    def trim_deadline(self) -> float | None:
        """When the loop must wake up to trim a burst's extra spares (None: nothing to trim)."""
        if len(self.spares) > self.target:
            return self._last_call_at() + BUSY_WINDOW_S
        return None

    def add(self) -> None:
        try:
            self.spares.extend(self._fork(max(1, self._wanted() - len(self.spares))))
        except OSError as exc:
            self.refilling = False  # retried when the next call takes a spare
            self.log(f"could not fork a spare call process: {exc}")

    def trim(self) -> None:
        while len(self.spares) > self.target and not self._busy():
            self.retire(self.spares[-1])

    # --- forking -------------------------------------------------------------------------

    def _fork(self, count: int) -> list[Spare]:
        """Fork up to ``count`` spares (at least one, or raise OSError).

        Each fork makes the host copy every page it writes afterwards, so everything that
        can be prepared comes before the forks, which run back to back, and the
        bookkeeping after them touches the host's pages once for the whole batch.
        """
        kits: list[Kit] = []
        try:
            for _ in range(count):
                kits.append(self._kit())
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
                host_pid=self.host_pid,
                calldir=calldir,
                rehearse=rehearse,
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
                if self.low_priority:  # getting ready must not slow running calls or the portal
                    self._lower_priority(pid)
                forked.append((pid, calldir, pipes))
        if not forked:
            assert problem is not None
            raise problem
        return [self._adopt(pid, calldir, pipes) for pid, calldir, pipes in forked]

    @staticmethod
    def _lower_priority(pid: int) -> None:
        # Lowered here, not by the spare itself: a spare handed over before it ran would
        # otherwise lower itself after the host restored it, and its call would run at 19.
        with contextlib.suppress(OSError):  # it died already: hand_over finds out
            os.setpriority(os.PRIO_PROCESS, pid, LOWEST_PRIORITY)

    def _kit(self) -> Kit:
        """A spare's working directory and its stdout, stderr, result and command pipes,
        the host's ends already non-blocking and enlarged."""
        calldir = self.dirs.take()
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
        self.dirs.release(calldir)

    def _adopt(self, pid: int, calldir: str, pipes: list[tuple[int, int]]) -> Spare:
        with contextlib.suppress(OSError):  # the child does it too; first one wins
            os.setpgid(pid, pid)
        for _, w in pipes[:3]:
            os.close(w)  # only the child may hold write ends, so its exit means EOF
        os.close(pipes[3][0])
        fds = {"stdout": pipes[0][0], "stderr": pipes[1][0], "result": pipes[2][0]}
        spare = Spare(pid, fds, pipes[3][1], self._open_pidfd(pid), calldir)
        self.by_pid[pid] = spare
        return spare

    def _open_pidfd(self, pid: int) -> int | None:
        # A pidfd turns readable when the child exits: the loop wakes and reaps.
        if not self.has_pidfd:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            self.has_pidfd = False  # old kernel: fall back to polling
            return None
        self.poller.watch(pidfd, select.EPOLLIN, wake_only)
        return pidfd

    # --- handing over and retiring -------------------------------------------------------

    def hand_over(
        self, command: list[bytes], before: Callable[[int], None] | None = None
    ) -> Spare | str:
        """Give the command to a spare (forking one if none is ready); or say why not.
        ``before(pid)`` runs first (puts the spare in its call's cgroup)."""
        problem = "no spare call process"
        for _ in range(3):  # a spare may have died while idle: try another
            if not self.spares:  # a batch: calls are arriving faster than spares
                try:
                    self.spares.extend(self._fork(max(1, self._wanted())))
                except OSError as exc:
                    return str(exc)
            spare = self._ready_spare()
            try:
                if self.low_priority:
                    os.setpriority(os.PRIO_PROCESS, spare.pid, self.priority)
                if before is not None:
                    before(spare.pid)
                _write_with_deadline(spare.command_w, command, COMMAND_TIMEOUT_S)
            except OSError as exc:
                problem = f"the spare call process did not take its command ({exc})"
                self.retire(spare)
                continue
            self.by_pid.pop(spare.pid, None)
            os.close(spare.command_w)
            return spare
        return problem

    def _ready_spare(self) -> Spare:
        """The oldest spare that has finished getting ready (of the first few), else the
        oldest: under load they are all still busy, and each look costs a /proc read."""
        for spare in itertools.islice(self.spares, READY_LOOKS):
            if spare.proc.waiting():
                self.spares.remove(spare)
                return spare
        return self.spares.popleft()

    def retire(self, spare: Spare, reaped: bool = False) -> None:
        self.by_pid.pop(spare.pid, None)
        with contextlib.suppress(ValueError):
            self.spares.remove(spare)
        if not reaped:  # a reaped pid may already belong to someone else
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(spare.pid, signal.SIGKILL)
            _reap_soon(spare.pid)  # its pidfd goes now: no event would tell us it died
        for fd in (*spare.fds.values(), spare.command_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        if spare.pidfd is not None:
            self.poller.unwatch(spare.pidfd)
            os.close(spare.pidfd)
        spare.proc.close()
        # Only an idle spare is retired, so the directory is empty unless a stranger wrote.
        self.dirs.release(spare.calldir)

    def retire_all(self) -> None:
        for spare in list(self.spares):
            self.retire(spare)


def may_raise_priority() -> bool:
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
    takes longer is left to the loop's reaper."""
    give_up = time.monotonic() + budget_s
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] or time.monotonic() > give_up:
                return
        except ChildProcessError:
            return
        time.sleep(0.0002)


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
