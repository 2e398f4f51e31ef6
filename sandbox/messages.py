"""What crosses the sandbox's process boundaries towards the portal, declared once.

    call process ──Envelope, on fd 3──▶ host ──AnswerFields (+ blobs)──▶ portal
                                        host ──HelloFields, at start────▶ portal

A call process writes an ``Envelope`` (sandbox/zygote/envelope.py); the host forwards it
untouched as a blob beside its ``AnswerFields``; a host whose warm-up failed says why in its
``HelloFields``. The writers annotate with these types and the portal's readers return them,
so mypy checks one against the other. The zygote side imports this module only for type
checking (it imports ``typing``, which the host must not load); the portal checks every field
on arrival against a schema whose keys must be these (sandbox/portal/wire.py).
"""

from __future__ import annotations

from typing import TypedDict

__all__ = ["AnswerFields", "Envelope", "ExceptionFacts", "HelloFields", "WireFrame"]


class WireFrame(TypedDict):
    """One frame of an exception's traceback (a sandbox.result.Frame)."""

    file: str
    line: int  # 0 when Python does not know it
    function: str


class ExceptionFacts(TypedDict, total=False):
    """What a process says of an exception it caught: a call's, or a Preload warm-up's."""

    phase: str | None  # a sandbox.result.Phase value
    error_type: str | None
    message: str | None
    location: str | None  # "file:line in function" of the innermost frame
    traceback: str | None
    frames: list[WireFrame]  # outermost first; a frame repeated in a row appears once
    fault: str | None  # a sandbox.result.Fault value the exception's class declared
    detail: object  # JSON data the exception carried (its sandbox_detail)


class Envelope(ExceptionFacts, total=False):
    """What a call process says of its call, on fd 3 (None: the "ok" envelope)."""

    outcome: str  # a sandbox.result.Outcome value the call process may report
    exit_code: int | None
    value_type: str | None  # of a value that could not be sent


class HelloFields(ExceptionFacts, total=False):
    """A host's handshake reply: ready, or why its warm-up failed (the exception's facts)."""

    ok: bool
    pid: int
    warnings: list[str]
    base_vsz_mb: float | None
    unreadable: list[str]


class AnswerFields(TypedDict, total=False):
    """A call's answer (its blobs, stdout, stderr, envelope and value, travel beside it)."""

    call_id: int
    host_error: str | None
    exit_code: int | None
    signal: int | None
    timed_out: bool
    cpu_s: float | None
    peak_rss_kb: int | None
    run_s: float
    stdout_total: int
    stderr_total: int
    result_problem: str | None
    base_vsz_mb: float | None
    host_pid: int
    disk_used: int | None
    disk_exceeded: bool
