"""What a sandboxed call returns: an Outcome, where it ended (Phase), the kind of failure its
exception declared (Fault), the frames it rose through (Frame), and a SandboxResult that
never raises."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import math
import uuid
from typing import Any

__all__ = ["Fault", "Frame", "Outcome", "Phase", "SandboxResult"]


class Outcome(enum.StrEnum):
    """How a sandboxed call ended. Values are the lowercase strings stored and shown."""

    OK = "ok"  # the plugin returned a value
    ERROR = "error"  # the plugin raised an exception (incl. KeyboardInterrupt, import errors)
    TIMEOUT = "timeout"  # wall-clock timeout_s or CPU cpu_s exceeded; the process was killed
    MEMORY = "memory"  # MemoryError / RLIMIT_AS (memory_mb) exceeded
    CRASHED = "crashed"  # killed by a signal: SIGSEGV, SIGABRT, SIGKILL from outside...
    EXITED = "exited"  # SystemExit or os._exit() before returning
    OUTPUT_LIMIT = "output_limit"  # the pickled return value is larger than result_bytes
    UNSERIALISABLE = "unserialisable"  # the return value cannot be pickled / rebuilt
    SANDBOX_FAILURE = "sandbox_failure"  # the sandbox machinery itself failed
    DISK_LIMIT = "disk_limit"  # wrote more than disk_mb in its working directory; killed
    CANCELLED = "cancelled"  # its caller cancelled it (CancelToken); its processes were killed


class Phase(enum.StrEnum):
    """Where a call was when it failed, as the process that ran it said (or the sandbox knew)."""

    IMPORT = "import"  # importing the target's module
    WARM_UP = "warm-up"  # a Preload's warm-up, in its host, before any call
    SETUP = "setup"  # the sandbox setting up the host or the call's process
    CALL = "call"  # the target running
    SERIALISE = "serialise"  # the return value on its way back (encoded, or parsed)


class Fault(enum.StrEnum):
    """The kind of failure an exception declares itself, by a ``sandbox_fault`` attribute on
    its class (the plugin loader's exceptions do): more than "the target raised"."""

    PARAMS = "params"  # the call's arguments do not fit what the target runs
    LOAD = "load"  # what the target runs could not be imported or set up for this call
    UNAVAILABLE = "unavailable"  # the call's process lacks what the target requires


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One frame of an exception's traceback: the file, the line, the function."""

    file: str
    line: int  # 0 when Python does not know it
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"


@dataclasses.dataclass(slots=True)
class SandboxResult:
    """The result of one sandboxed call.

    ``error`` is one actionable sentence (what failed, why, what to do next) whenever
    ``ok`` is false. ``stdout``/``stderr`` are the capped *tails* of the plugin's output.
    ``duration_ms`` is the wall time seen by the caller. ``warnings`` lists things an
    operator should know that did not fail the call (output truncated, isolation that was
    requested but is unavailable). ``disk_used_kb`` is the allocated size of the call's
    working directory the host last measured (None without a disk budget).

    What the call process knew of a failure, as fields (never to be parsed out of ``error``):
    ``phase`` where it failed (None when the process was killed or ended without saying:
    a deadline, a signal, ``os._exit``); ``message`` the exception's own message (or a
    ``SystemExit``'s text); ``location`` "file:line in function" where it was raised;
    ``limit`` the limit it ran into: a ``Limits`` field (``timeout_s``, ``cpu_s``,
    ``memory_mb``, ``result_bytes``, ``disk_mb``, or ``output_bytes`` when only its output
    was cut), or the ``SandboxConfig`` timeout a host's start or warm-up exceeded
    (``start_timeout_s``, ``warmup_timeout_s``); None when no limit was hit. ``frames`` the
    exception's traceback as ``Frame``s, outermost first (a frame repeated in a row, as in a
    recursion, appears once; at most the innermost 100). ``fault`` the kind of failure the
    exception's class declared (``sandbox_fault``), None for an exception that declares
    none; ``detail`` the JSON data the exception carried (``sandbox_detail``), None without.
    ``host_failure``, when the call never ran because its host could not start or its
    Preload warm-up failed: what happened to the host, the clause ``error`` quotes ("ended
    the sandbox host with exit code 3 before it was ready").
    ``memory_mechanism`` how ``memory_mb`` was enforced for the call: ``"rss-sampling"`` (the
    host read the process tree's resident memory from /proc), None without a memory limit;
    ``peak_rss_kb`` is then the most of the tree's or the call process's own peak.
    ``warmup_value`` what the Preload's warm-up returned, when it was JSON data of at most
    64 KiB (the plugin loader returns the environment's fingerprint), for every call of the
    host; None without a Preload.
    ``mode`` how the call ran: ``"fork"`` (a process forked for it from a host) or
    ``"resident"`` (inside a long-lived process of a Preload with a ``Resident`` policy).
    """

    ok: bool
    value: Any
    outcome: Outcome
    error: str | None = None
    error_type: str | None = None
    duration_ms: float = 0.0
    exit_code: int | None = None
    signal: str | None = None
    peak_rss_kb: int | None = None
    traceback: str | None = None
    stdout: str = ""
    stderr: str = ""
    target: str = ""
    warnings: list[str] = dataclasses.field(default_factory=list)
    disk_used_kb: int | None = None
    phase: Phase | None = None
    message: str | None = None
    location: str | None = None
    limit: str | None = None
    frames: list[Frame] = dataclasses.field(default_factory=list)
    fault: Fault | None = None
    detail: object = None
    host_failure: str | None = None
    memory_mechanism: str | None = None
    warmup_value: object = None
    mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; ``value`` and ``detail`` are converted best-effort (see
        ``jsonable``), each frame is a dict."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["outcome"] = self.outcome.value
        data["phase"] = self.phase.value if self.phase is not None else None
        data["fault"] = self.fault.value if self.fault is not None else None
        data["frames"] = [dataclasses.asdict(frame) for frame in self.frames]
        data["detail"] = jsonable(self.detail)
        data["warmup_value"] = jsonable(self.warmup_value)
        data["value"] = jsonable(self.value)
        data["warnings"] = list(self.warnings)
        return data


def jsonable(value: Any, _depth: int = 0) -> Any:
    """Best-effort conversion of a plugin value to JSON types, for logs and API payloads.

    Tuples and sets become lists, dict keys strings, bytes base64 text, datetimes ISO
    strings; anything else its repr. Non-finite floats become strings (JSON has none).
    """
    if _depth > 100:  # a pathological or self-referencing structure; stop, do not recurse
        return repr(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {_key(k): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [jsonable(v, _depth + 1) for v in items]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return repr(value)


def _key(key: Any) -> str:
    return key if isinstance(key, str) else str(jsonable(key))
