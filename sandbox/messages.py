"""What crosses the sandbox's process boundaries towards the portal, declared once.

    call process ──Envelope, on fd 3──▶ host ──AnswerFields (+ blobs)──▶ portal
                                        host ──HelloFields, at start────▶ portal

A call process writes an ``Envelope`` (sandbox/zygote/envelope.py); the host forwards it
untouched as a blob beside its ``AnswerFields``; a host whose warm-up failed says why in its
``HelloFields``. Writers leave out what they do not know; the portal checks every field on
arrival against a schema whose keys must be these (sandbox/portal/wire.py) and hands on each
message with all of its fields (None for one left out), which readers subscript, so mypy
checks writers and readers against one declaration. Hence a field's type admits None unless
the check requires it. The zygote side imports this module only for type checking (it
imports ``typing``, which the host must not load).
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
    frames: list[WireFrame] | None  # outermost first; a frame repeated in a row appears once
    fault: str | None  # a sandbox.result.Fault value the exception's class declared
    detail: object  # JSON data the exception carried (its sandbox_detail)


class Envelope(ExceptionFacts, total=False):
    """What a call process says of its call, on fd 3 (None: the "ok" envelope)."""

    outcome: str  # a sandbox.result.Outcome value the call process may report (required)
    exit_code: int | None
    value_type: str | None  # of a value that could not be sent


class HelloFields(ExceptionFacts, total=False):
    """A host's handshake reply: ready, or why its warm-up failed (the exception's facts)."""

    ok: bool  # required
    pid: int  # required
    warnings: list[str] | None
    base_vsz_mb: float | None
    unreadable: list[str] | None
    warmup_stdout: str | None  # the tail of what the warm-up wrote (import-time warnings)
    warmup_stderr: str | None
    warmup_value: object  # what the warm-up returned, when it is small JSON data
    memory_mechanism: str | None  # how this host enforces memory_mb (sandbox/zygote/cgroup.py)
    memory_fallback: str | None  # why not by cgroup v2 memory.max, when it samples RSS


class AnswerFields(TypedDict, total=False):
    """A call's answer (its blobs, stdout, stderr, envelope and value, travel beside it)."""

    call_id: int  # required
    host_error: str | None  # the host refused the call before it started
    exit_code: int | None
    signal: int | None
    timed_out: bool | None
    cpu_s: float | None
    peak_rss_kb: int | None
    run_s: float | None
    stdout_total: int | None
    stderr_total: int | None
    result_problem: str | None
    base_vsz_mb: float | None
    host_pid: int | None
    disk_used: int | None
    disk_exceeded: bool | None
    memory_exceeded: bool | None  # the tree's resident memory passed memory_mb: killed
    memory_peak_kb: int | None  # the tree's resident memory, the most the host sampled
    cancelled: bool | None  # the portal cancelled the call: its process group was killed
    memory_mechanism: str | None  # how memory_mb was enforced for this call, if it had one
