"""What a host or a call child may send the portal, declared once and checked on arrival.

Runs in the portal. Everything here comes from a process that ran plugin code, so each field
is checked for type and range before anything reads it; a frame that fails is a
``ProtocolError`` naming the field, and the host that sent it is killed. Values are JSON
text parsed with bounded nesting: no pickle, so nothing a host sends can run in the portal,
and the parsed size is bounded by the bytes (~25x at worst, for empty containers).
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable
from typing import Any, cast

from sandbox.limits import Limits
from sandbox.messages import AnswerFields, Envelope, HelloFields
from sandbox.result import Fault, Phase
from sandbox.zygote.cgroup import CGROUP_MEMORY, RSS_SAMPLING
from sandbox.zygote.protocol import (
    ENVELOPE_LIMIT,
    FRAME_HEADER,
    FRAMES_LIMIT,
    ProtocolError,
    decode_fields,
    frame_sizes,
    split_blobs,
)

__all__ = [
    "AnswerFields",
    "BlobLimits",
    "CallHeader",
    "Envelope",
    "HelloFields",
    "ProtocolError",
    "answer_blob_limits",
    "answered_call",
    "check_answer",
    "check_envelope",
    "check_hello",
    "decode_value",
    "lost_call",
    "no_blobs",
    "recv_frame",
]

TEXT_LIMIT = 64 * 1024  # a reason, a warning, a traceback: more is not a message
INT64 = 2**63
OUTCOMES = frozenset(
    {"ok", "error", "exited", "memory", "unserialisable", "output_limit", "sandbox_failure"}
)
PHASES = frozenset(phase.value for phase in Phase)  # what a call process may say it was in
FAULTS = frozenset(fault.value for fault in Fault)  # the kinds an exception may declare
MEMORY_MECHANISMS = frozenset({CGROUP_MEMORY, RSS_SAMPLING})  # how memory_mb may be enforced
LINE_LIMIT = 2**31  # of a frame's line number


class CallHeader(AnswerFields, total=False):
    """What the portal holds of a call: the host's answer, or why there is none (host_lost,
    set in the portal: the host was lost before it answered). All fields are present."""

    host_lost: str | None


def lost_call(reason: str) -> CallHeader:
    """The header of a call whose host was lost before it answered."""
    header = cast(CallHeader, dict.fromkeys(_ANSWER))
    header["host_lost"] = reason
    return header


def answered_call(answer: AnswerFields) -> CallHeader:
    """The header of a call the host answered."""
    header = CallHeader(**answer)
    header["host_lost"] = None
    return header


Schema = dict[str, tuple[str, Any]]  # field: (kind, largest value or length)


def _schema(declared: Any, schema: Schema) -> Schema:
    """A schema for the fields of a message ``declared`` (a TypedDict): the same keys, or the
    sandbox does not start (a field added on one side only would go unchecked, or unread)."""
    keys = declared.__required_keys__ | declared.__optional_keys__
    if keys != schema.keys():
        raise AssertionError(
            f"the schema of {declared.__name__} does not match its fields: "
            f"{sorted(keys ^ schema.keys())}"
        )
    return schema


# A missing field or None is allowed unless required.
_HELLO = _schema(
    HelloFields,
    {
        "ok": ("bool", None),
        "pid": ("int", INT64),
        "warnings": ("texts", TEXT_LIMIT),
        "base_vsz_mb": ("float", 1e12),
        "unreadable": ("texts", TEXT_LIMIT),
        "warmup_stdout": ("text", TEXT_LIMIT),
        "warmup_stderr": ("text", TEXT_LIMIT),
        "warmup_value": ("json", None),
        "memory_mechanism": ("text", 100),
        "memory_fallback": ("text", TEXT_LIMIT),
        "phase": ("text", 100),
        "error_type": ("text", TEXT_LIMIT),
        "message": ("text", TEXT_LIMIT),
        "location": ("text", TEXT_LIMIT),
        "traceback": ("text", TEXT_LIMIT),
        "frames": ("frames", FRAMES_LIMIT),
        "fault": ("text", 100),
        "detail": ("json", None),
    },
)
_ANSWER = _schema(
    AnswerFields,
    {
        "call_id": ("int", INT64),
        "host_error": ("text", TEXT_LIMIT),
        "exit_code": ("int", 255),
        "signal": ("int", 128),
        "timed_out": ("bool", None),
        "cpu_s": ("float", 1e12),
        "peak_rss_kb": ("int", 2**50),
        "run_s": ("float", 1e12),
        "stdout_total": ("int", INT64),
        "stderr_total": ("int", INT64),
        "result_problem": ("text", TEXT_LIMIT),
        "base_vsz_mb": ("float", 1e12),
        "host_pid": ("int", INT64),
        "disk_used": ("int", INT64),
        "disk_exceeded": ("bool", None),
        "memory_exceeded": ("bool", None),
        "memory_peak_kb": ("int", INT64),
        "cancelled": ("bool", None),
        "memory_mechanism": ("text", 100),
    },
)
_ENVELOPE = _schema(
    Envelope,
    {
        "outcome": ("text", 100),
        "phase": ("text", 100),
        "error_type": ("text", TEXT_LIMIT),
        "message": ("text", TEXT_LIMIT),
        "location": ("text", TEXT_LIMIT),
        "traceback": ("text", ENVELOPE_LIMIT),
        "exit_code": ("int", INT64),
        "value_type": ("text", TEXT_LIMIT),
        "frames": ("frames", FRAMES_LIMIT),
        "fault": ("text", 100),
        "detail": ("json", None),
    },
)


def check_hello(fields: dict[str, Any]) -> HelloFields:
    checked = _check(fields, _HELLO, "handshake")
    _check_choice(checked, "memory_mechanism", MEMORY_MECHANISMS, "handshake")
    if checked["ok"] is None or checked["pid"] is None:
        raise ProtocolError("handshake lacks 'ok' or 'pid'")
    _check_choice(checked, "fault", FAULTS, "handshake")
    return checked  # type: ignore[return-value]  # _check enforced _HELLO's types


def check_answer(fields: dict[str, Any]) -> AnswerFields:
    if fields.get("type") != "result":
        raise ProtocolError(f"frame type {str(fields.get('type'))[:40]!r} is not 'result'")
    checked = _check(fields, _ANSWER, "answer")
    if checked["call_id"] is None:
        raise ProtocolError("answer lacks 'call_id'")
    _check_choice(checked, "memory_mechanism", MEMORY_MECHANISMS, "answer")
    return checked  # type: ignore[return-value]  # _check enforced _ANSWER's types


def check_envelope(text: bytes) -> Envelope:
    """The child's envelope; ProtocolError if it is not JSON or a field has the wrong type."""
    try:
        envelope = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the envelope is not JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise ProtocolError("the envelope is not a JSON object")
    checked = _check(envelope, _ENVELOPE, "envelope")
    if checked["outcome"] not in OUTCOMES:
        raise ProtocolError(f"envelope field 'outcome' is {str(checked['outcome'])[:40]!r}")
    _check_choice(checked, "phase", PHASES, "envelope")
    _check_choice(checked, "fault", FAULTS, "envelope")
    return checked  # type: ignore[return-value]  # _check enforced _ENVELOPE's types


# --- reading a frame off a host's socket ----------------------------------------------------


def _recv_exact(sock: socket.socket, size: int) -> bytearray | None:
    """Exactly ``size`` bytes, or None at EOF."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return buffer


BlobLimits = dict[str, tuple[int, str]]  # blob name: (most bytes, the limit that says so)


def recv_frame(
    sock: socket.socket, blob_limits: Callable[[dict[str, Any]], BlobLimits]
) -> tuple[dict[str, Any], dict[str, bytes]] | None:
    """A frame from a host, or None at EOF. ``blob_limits(fields)`` says how large each blob
    may be; they are checked before a byte of them is read. ProtocolError for a bad frame."""
    header = _recv_exact(sock, FRAME_HEADER.size)
    if header is None:
        return None
    text_len, blobs_len = frame_sizes(header)
    text = _recv_exact(sock, text_len)
    if text is None:
        return None
    fields, declared = decode_fields(text)
    limits = blob_limits(fields)
    for name, length in declared:
        if name not in limits:
            raise ProtocolError(f"unexpected blob {name[:40]!r}")
        most, limit = limits[name]
        if length > most:
            raise ProtocolError(f"{name} of {length} bytes is over {limit} ({most} bytes)")
    data = _recv_exact(sock, blobs_len)
    if data is None:
        return None
    return fields, split_blobs(data, declared)


def no_blobs(fields: dict[str, Any]) -> BlobLimits:
    """For frames that carry no blobs (the handshake)."""
    return {}


def answer_blob_limits(limits: Limits) -> BlobLimits:
    """The most each blob of an answer may hold, and the limit that says so."""
    output = (limits.output_bytes, "limits.output_bytes")
    return {
        "stdout": output,
        "stderr": output,
        "envelope": (ENVELOPE_LIMIT, "the envelope limit"),
        "value": (limits.result_bytes, "limits.result_bytes"),
    }


def decode_value(data: bytes) -> Any:
    """A call's return value from its JSON text; ValueError for anything else."""
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("the value is nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON data")


def _check(fields: dict[str, Any], schema: Schema, what: str) -> dict[str, Any]:
    """Every field of the schema (None for one left out), each of its kind; fields outside
    the schema are dropped."""
    checked: dict[str, Any] = {}
    for name, (kind, limit) in schema.items():
        value = fields.get(name)
        checked[name] = value
        if value is not None and not _fits(value, kind, limit):
            raise ProtocolError(f"{what} field {name!r} is not a valid {kind}: {value!r:.60}")
    return checked


def _check_choice(checked: dict[str, Any], name: str, allowed: frozenset[str], what: str) -> None:
    """A field that, when given, must be one of ``allowed``."""
    if checked[name] not in allowed | {None}:
        raise ProtocolError(f"{what} field {name!r} is {str(checked[name])[:40]!r}")


def _is_frame(value: Any) -> bool:
    return (
        type(value) is dict
        and value.keys() == {"file", "line", "function"}
        and type(value["file"]) is str
        and len(value["file"]) <= TEXT_LIMIT
        and type(value["line"]) is int
        and 0 <= value["line"] <= LINE_LIMIT
        and type(value["function"]) is str
        and len(value["function"]) <= TEXT_LIMIT
    )


def _fits(value: Any, kind: str, limit: Any) -> bool:
    if kind == "bool":
        return type(value) is bool
    if kind == "int":
        return type(value) is int and -limit <= value <= limit
    if kind == "float":
        number = type(value) in (int, float)
        return number and math.isfinite(value) and 0 <= value <= limit
    if kind == "text":
        return type(value) is str and len(value) <= limit
    if kind == "json":
        return True  # any JSON data: the parse bounded it; its reader checks what it needs
    if kind == "frames":
        return type(value) is list and len(value) <= limit and all(map(_is_frame, value))
    return (
        type(value) is list
        and len(value) <= 100
        and all(type(item) is str and len(item) <= limit for item in value)
    )
