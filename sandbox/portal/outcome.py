"""Turning what a host reports into a SandboxResult with an operator-readable sentence.

Runs in the portal. Kept apart from the transport so each mapping rule is easy to read.
"""

from __future__ import annotations

import io
import pickle
import signal
import time
from typing import Any

from sandbox.limits import Limits
from sandbox.messages import ExceptionFacts
from sandbox.portal.wire import CallHeader, Envelope, check_envelope, decode_value
from sandbox.result import Fault, Frame, Outcome, Phase, SandboxResult
from sandbox.zygote import linux
from sandbox.zygote.cgroup import RSS_SAMPLING
from sandbox.zygote.protocol import RESULT_LOST_EXIT, ProtocolError


class CallReport:
    """Everything known about one finished call, from the host's (checked) answer."""

    def __init__(
        self,
        name: str,
        limits: Limits,
        header: CallHeader,
        blobs: dict[str, bytes],
        result_format: str = "json",
    ) -> None:
        self.name = name
        self.limits = limits
        self.header = header
        self.blobs = blobs
        self.value = blobs.get("value", b"")
        self.result_format = result_format
        self.import_hint: str | None = None  # e.g. what the run_as user cannot read
        self.envelope: Envelope | None = None
        text = blobs.get("envelope")
        if text is not None:
            try:
                self.envelope = check_envelope(text)
            except ProtocolError as exc:  # e.g. a plugin wrote a look-alike record to fd 3
                header["result_problem"] = f"the result channel (fd 3) held garbage: {exc}"


def build_result(
    report: CallReport,
    duration_ms: float,
    result_globals: frozenset[str],
    warnings: list[str],
) -> SandboxResult:
    header = report.header
    result = SandboxResult(
        ok=False,
        value=None,
        outcome=Outcome.SANDBOX_FAILURE,
        duration_ms=duration_ms,
        target=report.name,
        warnings=list(warnings),
    )
    refused, lost = header["host_error"], header["host_lost"]
    if refused is not None or lost is not None:
        # The host refused the call before it started (host_error), or was lost meanwhile.
        result.phase = Phase.SETUP if refused is not None else None
        return _fail(result, Outcome.SANDBOX_FAILURE, "SandboxFailure", str(refused or lost))
    _copy_process_facts(result, report)
    envelope = report.envelope
    if header["cancelled"]:
        return _fail(result, Outcome.CANCELLED, CANCELLED, cancelled_message(report.name))
    if header["timed_out"]:
        result.limit = "timeout_s"
        return _timeout(result, report)
    if header["disk_exceeded"]:
        result.limit = "disk_mb"
        return _disk_limit(result, report)
    if header["memory_exceeded"]:
        result.limit = "memory_mb"
        return _memory_limit(result, report)
    if envelope is not None:
        _copy_envelope_facts(result, envelope)
        return _from_envelope(result, report, envelope, result_globals)
    signum = header["signal"]
    if signum is not None:
        return _from_signal(result, report, signum)
    return _from_exit_code(result, report, header["exit_code"])


def _copy_process_facts(result: SandboxResult, report: CallReport) -> None:
    header = report.header
    result.exit_code = header["exit_code"]
    signum = header["signal"]
    result.signal = linux.signal_name(signum) if signum is not None else None
    peaks = [kb for kb in (header["peak_rss_kb"], header["memory_peak_kb"]) if kb is not None]
    result.peak_rss_kb = max(peaks) if peaks else None
    sampled = RSS_SAMPLING if report.limits.memory_mb is not None else None
    result.memory_mechanism = header["memory_mechanism"] or sampled
    disk_used = header["disk_used"]
    result.disk_used_kb = disk_used // 1024 if disk_used is not None else None
    cap = report.limits.output_bytes
    totals = {"stdout": header["stdout_total"], "stderr": header["stderr_total"]}
    for stream, total in totals.items():
        data = report.blobs.get(stream, b"")
        setattr(result, stream, data.decode("utf-8", errors="replace"))
        if total is not None and total > len(data):
            result.warnings.append(
                f"{stream} was {total} bytes; only the last {cap} were kept (limits.output_bytes)"
            )
            result.limit = "output_bytes"  # unless a limit that stopped the call replaces it
    problem = header["result_problem"]
    if problem:
        result.warnings.append(problem)


def _copy_envelope_facts(result: SandboxResult, envelope: Envelope) -> None:
    """What the call process said of its failure: where it was, the message, the place, the
    frames, and the kind of failure its exception declared, with its data."""
    phase = envelope["phase"]
    result.phase = Phase(phase) if phase is not None else None
    result.message = envelope["message"]
    result.location = envelope["location"]
    copy_exception_facts(result, envelope)


def copy_exception_facts(result: SandboxResult, facts: ExceptionFacts) -> None:
    """The frames, fault and detail a process reported of an exception (checked on arrival:
    sandbox/portal/wire.py)."""
    frames = facts["frames"] or []
    result.frames = [Frame(frame["file"], frame["line"], frame["function"]) for frame in frames]
    fault = facts["fault"]
    result.fault = Fault(fault) if fault is not None else None
    result.detail = facts["detail"]


def _fail(
    result: SandboxResult,
    outcome: Outcome,
    error_type: str | None,
    error: str,
    traceback: str | None = None,
) -> SandboxResult:
    result.ok = False
    result.outcome = outcome
    result.error_type = error_type
    result.error = error
    result.traceback = traceback
    return result


CANCELLED = "Cancelled"  # the error_type of a cancelled call


def cancelled_message(name: str) -> str:
    return (
        f"Plugin call {name!r} was cancelled by its caller and its processes were killed "
        "(nothing to fix; call it again if its result is still needed)"
    )


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (a time.perf_counter() reading)."""
    return (time.perf_counter() - started) * 1000.0


def cancelled_before_start(name: str, duration_ms: float) -> SandboxResult:
    """A call whose token was cancelled before it reached a host: it never started."""
    return failure_result(name, Outcome.CANCELLED, CANCELLED, cancelled_message(name), duration_ms)


def _timeout(result: SandboxResult, report: CallReport) -> SandboxResult:
    seconds = report.limits.timeout_s
    return _fail(
        result,
        Outcome.TIMEOUT,
        "Timeout",
        f"Plugin call {report.name!r} exceeded its wall-clock timeout of {seconds:g} s and "
        "was killed (raise limits.timeout_s or make the plugin faster)",
    )


def _disk_limit(result: SandboxResult, report: CallReport) -> SandboxResult:
    used_mb = (report.header["disk_used"] or 0) // (1024 * 1024)
    return _fail(
        result,
        Outcome.DISK_LIMIT,
        "DiskLimit",
        f"Plugin call {report.name!r} wrote {used_mb} MB in its working directory, more than "
        f"limits.disk_mb ({report.limits.disk_mb} MB), so it was stopped and its files there "
        "were removed (raise limits.disk_mb, write less, or write large output elsewhere)",
    )


def _from_envelope(
    result: SandboxResult,
    report: CallReport,
    envelope: Envelope,
    result_globals: frozenset[str],
) -> SandboxResult:
    outcome = envelope["outcome"]
    name = report.name
    kind = envelope["error_type"]
    what = _exception_text(envelope)
    tb = envelope["traceback"]
    if outcome == "ok":
        return _rebuild_value(result, report, result_globals)
    if outcome == "exited":
        code = envelope["exit_code"]
        result.exit_code = code
        return _fail(
            result,
            Outcome.EXITED,
            "SystemExit",
            f"Plugin call {name!r} raised SystemExit({code}){_at(envelope)} instead of "
            "returning a value (plugins must return or raise, not exit)",
            tb,
        )
    if outcome == "memory":
        if report.limits.address_space_mb is not None:
            result.limit = "address_space_mb"
        return _fail(result, Outcome.MEMORY, "MemoryError", _memory_message(report, envelope), tb)
    if outcome == "unserialisable":
        carrier = "pickled" if report.result_format == "pickle" else "sent as JSON"
        return _fail(
            result,
            Outcome.UNSERIALISABLE,
            kind,
            f"Plugin call {name!r} returned a {envelope['value_type']} that cannot be "
            f"{carrier} ({what}) (return plain data: dict, list, str, int, float, bool, "
            "None; e.g. str(value), value.tolist() or value.item() for arrays and numpy "
            "numbers, value.decode() or base64 text for bytes; NaN and infinity as None or a "
            "string)",
            tb,
        )
    if outcome == "output_limit":
        result.limit = "result_bytes"
        return _fail(
            result,
            Outcome.OUTPUT_LIMIT,
            "ResultTooLarge",
            f"Plugin call {name!r} returned a {envelope['value_type']} larger than "
            f"limits.result_bytes ({report.limits.result_bytes} bytes) when serialised (return "
            "less data, store large data elsewhere and return a reference, or raise "
            "limits.result_bytes)",
        )
    if outcome == "sandbox_failure":
        return _fail(
            result,
            Outcome.SANDBOX_FAILURE,
            kind,
            f"The sandbox could not set up the process for plugin call {name!r}: {what} "
            "(this is a sandbox or machine problem, not the plugin's; see the traceback)",
            tb,
        )
    if envelope["phase"] == "import":
        advice = report.import_hint or (
            "check the plugin's module path, that it is installed where the portal runs, "
            "and its imports"
        )
        return _fail(
            result,
            Outcome.ERROR,
            kind,
            f"Plugin call {name!r} could not import its target: {what}{_at(envelope)} ({advice})",
            tb,
        )
    return _fail(
        result,
        Outcome.ERROR,
        kind,
        f"Plugin call {name!r} raised {what}{_at(envelope)} (fix the plugin or its input; "
        "the traceback shows where)",
        tb,
    )


def _exception_text(envelope: Envelope) -> str:
    kind = envelope["error_type"] or "an exception"
    message = envelope["message"]
    return f"{kind}: {message}" if message else kind


def _at(envelope: Envelope) -> str:
    location = envelope["location"]
    return f" at {location}" if location else ""


def _memory_limit(result: SandboxResult, report: CallReport) -> SandboxResult:
    peak_mb = (result.peak_rss_kb or 0) // 1024
    return _fail(
        result,
        Outcome.MEMORY,
        "MemoryLimit",
        f"Plugin call {report.name!r} used {peak_mb} MB of resident memory (its process "
        f"tree), more than limits.memory_mb ({report.limits.memory_mb} MB), so it was killed "
        "(raise limits.memory_mb or make the plugin use less memory)",
    )


def _memory_message(report: CallReport, envelope: Envelope) -> str:
    limit = report.limits.address_space_mb
    base = report.header["base_vsz_mb"] or 0
    if limit is None:
        return (
            f"Plugin call {report.name!r} ran out of memory (MemoryError{_at(envelope)}): "
            "the machine or an rlimit refused it more (give it less input, or run it where "
            "there is more memory)"
        )
    message = (
        f"Plugin call {report.name!r} ran out of memory (MemoryError{_at(envelope)}) under "
        f"its limit of {limit} MB of address space (raise limits.address_space_mb, or leave "
        "it unset and limit resident memory with limits.memory_mb)"
    )
    if limit and base > limit / 2:
        message += (
            f"; note the process already used {base:.0f} MB of address space before the "
            "plugin ran, mostly from its Preload warm-up"
        )
    return message


def _from_signal(result: SandboxResult, report: CallReport, signum: int) -> SandboxResult:
    name = report.name
    sig = linux.signal_name(signum)
    cpu_limit = report.limits.cpu_s
    cpu_used = report.header["cpu_s"] or 0.0
    over_cpu = cpu_limit is not None and cpu_used >= cpu_limit
    if signum == signal.SIGXCPU or (signum == signal.SIGKILL and over_cpu):
        result.limit = "cpu_s"
        return _fail(
            result,
            Outcome.TIMEOUT,
            "CPUTimeLimit",
            f"Plugin call {name!r} used its CPU limit of {cpu_limit:g} CPU seconds "
            f"(used {cpu_used:.1f}) and was killed by {sig} (raise limits.cpu_s or make the "
            "plugin do less work)",
        )
    if signum == signal.SIGKILL:
        return _fail(
            result,
            Outcome.CRASHED,
            sig,
            f"Plugin call {name!r} was killed by SIGKILL from outside the sandbox, often the "
            "kernel's out-of-memory killer (check the machine's memory and the plugin's "
            "memory use, and lower limits.memory_mb so the plugin fails cleanly instead)",
        )
    return _fail(
        result,
        Outcome.CRASHED,
        sig,
        f"Plugin call {name!r} crashed with {sig} ({linux.signal_description(signum)}) "
        "(the plugin or a native library it uses has a bug; stderr holds the Python "
        "traceback at the moment of the crash)",
    )


def _from_exit_code(result: SandboxResult, report: CallReport, code: int | None) -> SandboxResult:
    name = report.name
    if code == RESULT_LOST_EXIT:
        return _fail(
            result,
            Outcome.SANDBOX_FAILURE,
            "ResultLost",
            f"Plugin call {name!r} finished but its result could not be delivered: the "
            "plugin closed the sandbox's result channel (fd 3) and its working directory "
            "was not writable (do not close inherited file descriptors in plugins)",
        )
    return _fail(
        result,
        Outcome.EXITED,
        "ProcessExit",
        f"Plugin call {name!r} ended its process with exit code {code} before returning "
        "(os._exit() or a native library exiting; plugins must return or raise)",
    )


# --- rebuilding the value ------------------------------------------------------------


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, dotted: str) -> None:
        super().__init__(dotted)
        self.dotted = dotted


class _ResultUnpickler(pickle.Unpickler):
    """Only rebuilds allowed globals: the portal must not import (or run) plugin code."""

    def __init__(self, data: bytes, allowed: frozenset[str]) -> None:
        super().__init__(io.BytesIO(data))
        self.allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        dotted = f"{module}.{name}"
        if dotted not in self.allowed:
            raise _RefusedGlobal(dotted)
        return super().find_class(module, name)


def _rebuild_value(
    result: SandboxResult, report: CallReport, allowed: frozenset[str]
) -> SandboxResult:
    if report.result_format == "pickle":
        return _unpickle_value(result, report, allowed)
    try:
        value = decode_value(report.value)
    except ValueError as exc:
        result.phase, result.message = Phase.SERIALISE, str(exc)
        return _fail(
            result,
            Outcome.UNSERIALISABLE,
            "InvalidJSON",
            f"Plugin call {report.name!r} returned a value that is not valid JSON data "
            f"({exc}); the sandbox host or the plugin tampered with the result (return plain "
            "data, and do not write to the sandbox's file descriptors)",
        )
    result.ok = True
    result.outcome = Outcome.OK
    result.value = value
    return result


def _unpickle_value(
    result: SandboxResult, report: CallReport, allowed: frozenset[str]
) -> SandboxResult:
    """Trusted code only (SandboxConfig.result_format="pickle"): allow-listed types."""
    name = report.name
    try:
        value = _ResultUnpickler(report.value, allowed).load()
    except _RefusedGlobal as exc:
        result.phase, result.message = Phase.SERIALISE, str(exc)
        return _fail(
            result,
            Outcome.UNSERIALISABLE,
            "RefusedGlobal",
            f"Plugin call {name!r} returned a value containing {exc.dotted}, which the "
            "portal does not load from plugins (the plugin must return plain data: dict, "
            "list, str, int, float, bool, None, e.g. str(value) or value.tolist(); only a "
            "trusted in-house target may have its type added to SandboxConfig.result_globals "
            "in the portal's code)",
        )
    except Exception as exc:  # anything a damaged pickle can raise
        result.phase, result.message = Phase.SERIALISE, str(exc)
        return _fail(
            result,
            Outcome.UNSERIALISABLE,
            type(exc).__name__,
            f"Plugin call {name!r} returned a value the portal could not rebuild "
            f"({type(exc).__name__}: {exc}) (return plain data)",
        )
    result.ok = True
    result.outcome = Outcome.OK
    result.value = value
    return result


def failure_result(
    name: str,
    outcome: Outcome,
    error_type: str,
    error: str,
    duration_ms: float,
    traceback: str | None = None,
    warnings: list[str] | None = None,
    **facts: Any,
) -> SandboxResult:
    """A result for failures found before or around the call (host start, lost host)."""
    return SandboxResult(
        ok=False,
        value=None,
        outcome=outcome,
        error=error,
        error_type=error_type,
        duration_ms=duration_ms,
        traceback=traceback,
        target=name,
        warnings=list(warnings or []),
        **facts,
    )
