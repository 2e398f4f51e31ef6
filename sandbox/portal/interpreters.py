"""Whether an interpreter can run a sandbox host: it exists, runs, and is CPython 3.11+.

Runs in the portal. The answer is cached per path and file identity (inode, size, mtime), so a
replaced or upgraded interpreter is probed again and an unchanged one costs one stat().
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading

__all__ = ["MIN_VERSION", "InterpreterProbe", "probe_interpreter"]

MIN_VERSION = (3, 11)  # the host's code uses 3.11 (``-P``, enum.StrEnum in the wire types)
PROBE_TIMEOUT_S = 30.0  # a cold interpreter on a loaded machine; a hung one is "broken"
_PROBE = (
    "import json, platform, sys; print(json.dumps({'version': list(sys.version_info[:3]), "
    "'implementation': sys.implementation.name, 'prefix': sys.prefix}))"
)


@dataclasses.dataclass(frozen=True)
class InterpreterProbe:
    """What probing one interpreter found. ``problem`` is None when it can run hosts, else
    one of "missing", "not_executable", "too_old", "not_cpython", "broken"."""

    path: str
    problem: str | None = None
    version: str = ""  # "3.11.7", when it ran
    detail: str = ""  # what went wrong, in the interpreter's or the OS's words

    @property
    def ok(self) -> bool:
        return self.problem is None


_cache: dict[tuple[str, int, int, int, int], InterpreterProbe] = {}
_lock = threading.Lock()


def probe_interpreter(path: str) -> InterpreterProbe:
    """Probe ``path`` (an absolute path): can a sandbox host run with it?"""
    try:
        stat = os.stat(path)
    except OSError as exc:
        return InterpreterProbe(path, "missing", detail=exc.strerror or str(exc))
    if not os.access(path, os.X_OK) or not os.path.isfile(path):
        return InterpreterProbe(path, "not_executable", detail="not an executable file")
    key = (path, stat.st_ino, stat.st_dev, stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _cache.get(key)
    if known is not None:
        return known
    probe = _run_probe(path)
    with _lock:
        _cache[key] = probe
    return probe


def _run_probe(path: str) -> InterpreterProbe:
    try:
        done = subprocess.run(
            [path, "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env={"PATH": os.environ.get("PATH", "")},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return InterpreterProbe(
            path, "broken", detail=f"it did not answer in {PROBE_TIMEOUT_S:g} s"
        )
    except OSError as exc:
        return InterpreterProbe(path, "not_executable", detail=exc.strerror or str(exc))
    try:
        facts = json.loads(done.stdout.strip().splitlines()[-1])
        version = tuple(int(part) for part in facts["version"])
        implementation = str(facts["implementation"])
    except (ValueError, IndexError, KeyError, TypeError):
        said = (done.stderr or done.stdout).strip()[-300:]
        return InterpreterProbe(path, "broken", detail=f"exit code {done.returncode}: {said}")
    shown = ".".join(map(str, version))
    if implementation != "cpython":
        return InterpreterProbe(path, "not_cpython", shown, detail=implementation)
    if version[:2] < MIN_VERSION:
        return InterpreterProbe(path, "too_old", shown)
    return InterpreterProbe(path, None, shown)
