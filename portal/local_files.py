"""The portal's own files on disk (var/, the SQLite database, the development key), owner-only.

Plugins may run as other users on the same machine (SANDBOX_RUN_AS), so nothing the portal
keeps locally may be readable by them: directories are 0700 and files 0600, created that way
and tightened at start when an older version left them looser. Standard library only: the
settings module imports it before Django is set up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger("portal.files")

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
# SQLite keeps a write-ahead log and a shared-memory index beside the database file.
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def private_directory(path: Path) -> None:
    """Create the directory (and its parents) owner-only if it does not exist."""
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)


def development_secret_key(path: Path) -> str:
    """The key kept in `path`, created (owner-only from its first byte) when missing."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    private_directory(path.parent)
    key = secrets.token_urlsafe(50)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:  # another process made it first: use theirs
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as key_file:
        key_file.write(key)
    return key


def create_private_file(path: Path) -> None:
    """Create an empty owner-only file unless it exists (an empty file is an empty SQLite DB)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def sqlite_files(database: str) -> list[Path]:
    """The database file and its companions, for a plain path (not :memory: or a URI)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return []
    return [Path(f"{database}{suffix}") for suffix in SQLITE_COMPANIONS]


def tighten(directories: Iterable[Path], files: Iterable[Path]) -> list[str]:
    """Remove group and other access from those that exist; what changed, as `path (was 0644)`."""
    changed = []
    wanted_modes = [(d, DIRECTORY_MODE) for d in directories] + [(f, FILE_MODE) for f in files]
    for path, wanted in wanted_modes:
        try:
            current = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if current & 0o077:
            path.chmod(current & wanted)
            changed.append(f"{path} (was {current:04o})")
    return changed


def secure_local_files(*, var_dir: Path, key_file: Path, sqlite_database: str | None) -> None:
    """Make var/, the key file and the SQLite files owner-only; one log line if any changed."""
    private_directory(var_dir)
    files = [key_file]
    if sqlite_database:
        database_files = sqlite_files(sqlite_database)
        if database_files:
            private_directory(database_files[0].parent)
            # Made here so SQLite, which gives its -wal and -shm files the database's mode, never
            # creates it with the process umask.
            create_private_file(database_files[0])
            files += database_files
    report_tightened(tighten([var_dir], files))


def report_tightened(changed: list[str]) -> None:
    """One line naming every path that was tightened (nothing when none was)."""
    if changed:
        logger.warning(
            "Made owner-only (directories 0700, files 0600), since other users on this machine "
            "could read them: %s",
            ", ".join(changed),
        )
