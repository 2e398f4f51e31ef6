"""The host's end of its portal's socket: frames in, answers out, never blocking the loop.

Before the loop runs, the handshake is blocking (read_frame_blocking, write_blocking); in
the loop the socket is non-blocking and answers queue until the portal takes them.
"""

from __future__ import annotations

import collections
import fcntl
import os
import pickle  # only for what the portal sends (a Preload): trusted
import select
import signal
import sys

from sandbox.zygote import linux
from sandbox.zygote.poller import IN
from sandbox.zygote.protocol import FRAME_HEADER, decode_frame, encode_frame, frame_sizes

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names: kept out of the host, whose size slows every fork
    from collections.abc import Callable

    from sandbox.messages import AnswerFields
    from sandbox.zygote.poller import Poller

    Blobs = dict[str, bytes | memoryview]  # a frame's binary parts, by name

READ_CHUNK = 1 << 20
IOV_MAX = 1024


class PortalLink:
    """Frames from the portal go to ``on_message(fields, blobs)``; when the portal goes away
    (EOF, a broken socket), ``on_gone()`` is called once and nothing more is sent."""

    def __init__(
        self,
        ctrl: int,
        poller: Poller,
        on_message: Callable[[dict, dict[str, bytes]], None],
        on_gone: Callable[[], None],
    ) -> None:
        self.ctrl = ctrl
        self.poller = poller
        self.on_message = on_message
        self.on_gone = on_gone
        self.inbuf = bytearray()
        self.outq: collections.deque[memoryview] = collections.deque()
        self.want_write = False
        self.gone = False

    def start(self) -> None:
        os.set_blocking(self.ctrl, False)
        self.poller.watch(self.ctrl, IN, self._on_events)

    @property
    def sending(self) -> bool:
        """Whether answers are still queued for the portal."""
        return bool(self.outq)

    def _on_events(self, events: int) -> None:
        if events & select.EPOLLOUT:
            self._flush()
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
            self.on_message(fields, blobs)

    def _portal_gone(self) -> None:
        # The portal exited or closed us: nobody will read results.
        self.gone = True
        self.outq.clear()
        self.poller.unwatch(self.ctrl)
        self.on_gone()

    def send_answer(self, call_id: int, fields: AnswerFields, blobs: Blobs) -> None:
        """A call's answer: its fields as JSON; value, output and envelope as blobs."""
        fields["call_id"] = call_id
        self.send(dict(fields, type="result"), blobs)

    def send(self, fields: dict, blobs: dict | None = None) -> None:
        if self.gone:
            return
        self.outq.extend(memoryview(b) for b in encode_frame(fields, blobs))
        self._flush()

    def _flush(self) -> None:
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
            self.poller.modify(self.ctrl, IN | (select.EPOLLOUT if want_write else 0))


def adopt_control_fd(fd: int) -> int:
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


def read_frame_blocking(fd: int) -> tuple[dict, dict[str, bytes]] | None:
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


def write_blocking(fd: int, buffers: list[bytes | memoryview]) -> None:
    for buffer in buffers:
        view = memoryview(buffer)
        while view:
            view = view[os.write(fd, view) :]


def receive_init(argv: list[str], module: str) -> tuple[int, dict] | int:
    """The handshake's first half for `python -m MODULE --fd N`: the control socket and the
    portal's init fields (its Preload unpickled), or the exit code: 2 for a misuse, 1 when the
    portal died before this process could die with it."""
    try:
        fd = int(argv[argv.index("--fd") + 1])
    except (ValueError, IndexError):
        print(f"usage: python -m {module} --fd N", file=sys.stderr)
        return 2
    # Die with the portal even while plugin code (a warm-up) keeps this process busy. The
    # portal starts these processes from one long-lived thread: the signal follows that thread.
    linux.set_parent_death_signal(signal.SIGKILL)
    ctrl = adopt_control_fd(fd)
    frame = read_frame_blocking(ctrl)
    if frame is None or frame[0].get("type") != "init":
        return 2
    fields, blobs = frame
    if os.getppid() != fields["portal_pid"]:
        return 1  # the portal died before the death signal was armed
    if "preload" in blobs:
        fields["preload"] = pickle.loads(blobs["preload"])
    return ctrl, fields
