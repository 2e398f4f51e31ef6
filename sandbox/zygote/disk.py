"""How much a call has written in its working directory, for its disk budget (host side).

The measure is the allocated size (``st_blocks``) of everything below the directory, so a
sparse file counts the blocks it has, not its length, and a file with several links counts
once. A plugin may make millions of entries, so a measurement walks a bounded number of
them per step and resumes where it stopped: the host's loop, which serves every call,
never stalls on one call's tree.

Runs in the host: standard library only, and small (every byte of the host is copied into
each fork).
"""

from __future__ import annotations

import contextlib
import os
import stat

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing grows every fork

if TYPE_CHECKING:  # typing-only names, kept out of the host
    from os import _ScandirIterator

BLOCK_BYTES = 512  # st_blocks is counted in 512-byte units on Linux, whatever the filesystem


class DiskScan:
    """One walk of a directory tree, done a few entries at a time.

    ``total`` is the bytes seen so far in this walk; once ``step`` returns True it is the
    size of the whole tree (then ``restart`` begins the next walk).
    """

    __slots__ = ("current", "linked", "pending", "root", "total")

    def __init__(self, root: str) -> None:
        self.root = root
        self.current: _ScandirIterator[str] | None = None
        self.pending: list[str] = [root]
        self.linked: set[tuple[int, int]] = set()
        self.total = 0

    def restart(self) -> None:
        self.close()
        self.pending = [self.root]
        self.linked = set()
        self.total = 0

    def step(self, entries: int) -> bool:
        """Measure up to ``entries`` more entries; True when the walk is complete."""
        while entries > 0:
            if self.current is None:
                if not self.pending:
                    return True
                self.current = _open_dir(self.pending.pop())
                continue
            entry = next(self.current, None)
            if entry is None:
                self.close()
                continue
            entries -= 1
            self._count(entry)
        return self.current is None and not self.pending

    def _count(self, entry: os.DirEntry[str]) -> None:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:  # removed meanwhile
            return
        if stat.S_ISDIR(st.st_mode):
            self.pending.append(entry.path)
        elif st.st_nlink > 1:
            inode = (st.st_dev, st.st_ino)
            if inode in self.linked:
                return
            self.linked.add(inode)
        self.total += st.st_blocks * BLOCK_BYTES

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


def tree_size(root: str) -> int:
    """The allocated size of everything below ``root``, in one go (a finished call's tree;
    an empty directory costs one scandir)."""
    scan = DiskScan(root)
    while not scan.step(1 << 30):
        pass
    return scan.total


def _open_dir(path: str) -> _ScandirIterator[str] | None:
    try:
        return os.scandir(path)
    except PermissionError:  # a plugin running as us made it unreadable: hiding is no way out
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)
            return os.scandir(path)
    except OSError:  # removed meanwhile
        pass
    return None
