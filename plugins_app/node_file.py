"""A JSON document every server process of a node shares through one file, replaced atomically.

Writers take an `fcntl` lock beside the file and write a temporary file they `os.replace` in,
so a reader sees the old document or the new one, never half of one; a document older than the
one held (by its time key) never replaces it. Readers need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger("plugins_app.node_file")


def replace_if_newer(path: Path, document: dict[str, Any], *, time_key: str) -> bool:
    """Make `document` the file's content unless it holds one at least as new; True if written.

    Raises OSError when the directory cannot be written (the caller decides how loud to be).
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = None
    try:
        with open(f"{path}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # writers in other processes of the node wait
            held = load(path)
            if held is not None and _time(held, time_key) >= _time(document, time_key):
                return False
            with tempfile.NamedTemporaryFile(
                "w", dir=path.parent, prefix=f".{path.name}.", delete=False
            ) as temporary:
                json.dump(document, temporary)
            os.replace(temporary.name, path)
            temporary = None
            return True
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary.name)


def load(path: Path) -> dict[str, Any] | None:
    """The document in `path`, or None when there is none or it is not a JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        logger.warning("%s is not JSON; it is ignored", path)
        return None
    if not isinstance(document, dict):
        logger.warning("%s does not hold a JSON object; it is ignored", path)
        return None
    return document


def _time(document: dict[str, Any], key: str) -> float:
    value = document.get(key)
    return float(value) if isinstance(value, int | float) else float("-inf")
