"""The private directories a host makes in the temporary directory: one working directory
per call (reused while untouched), and the host's bytecode cache."""

from __future__ import annotations

import contextlib
import os
import stat

IDLE_DIRS = 32  # untouched call directories kept for reuse: mkdir+rmdir on ext4 ~0.5 ms


class CallDirs:
    """Names ``<kind>-<host pid>-<n>-<6 hex digits>`` (see protocol.CALL_DIR_KIND): the
    counter makes a name unique for this host, the pid among hosts, the random part
    against guessing."""

    def __init__(self, tmp_dir: str, host_pid: int, kind: str) -> None:
        self.tmp_dir = tmp_dir
        self.host_pid = host_pid
        self.kind = kind
        self.counter = 0
        self.idle: list[str] = []
        self.owner = os.geteuid()  # who a pristine directory belongs to
        self.chown_to: tuple[int, int] | None = None  # SANDBOX_RUN_AS, when calls drop to it

    def take(self) -> str:
        if self.idle:
            return self.idle.pop()
        path = self.make_private(self.kind)
        if self.chown_to is not None:
            os.chown(path, *self.chown_to)
        return path

    def release(self, path: str) -> None:
        """Keep a directory the call left exactly as made (empty, 0700, ours); else rm -rf."""
        if len(self.idle) < IDLE_DIRS and _is_pristine(path, self.owner):
            self.idle.append(path)
        else:
            remove_tree(path)

    def make_private(self, kind: str) -> str:
        while True:
            path = self._new_name(kind)
            try:
                os.mkdir(path, 0o700)
                return path
            except FileExistsError:
                continue

    def park(self, path: str) -> str:
        """Before an early answer: the directory the call saw must be gone when the portal
        has its result, but removing it costs ~0.15 ms and its reuse would be lost. A
        rename does both; the directory (at the path returned) is checked and reused or
        removed once the call process has been reaped."""
        parked = self._new_name(self.kind)
        if os.path.lexists(parked):
            return path  # cannot happen for a fresh counter; then the normal cleanup does it
        try:
            os.rename(path, parked)
        except OSError:
            return path
        return parked

    def remove_idle(self) -> None:
        for path in self.idle:
            remove_tree(path)
        self.idle.clear()

    def _new_name(self, kind: str) -> str:
        """A path in the temporary directory no directory of ours had."""
        self.counter += 1
        name = f"{kind}-{self.host_pid}-{self.counter}-{os.urandom(3).hex()}"
        return os.path.join(self.tmp_dir, name)


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


def remove_tree(root: str) -> None:
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
