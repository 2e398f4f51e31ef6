"""From a sandbox result to a run outcome: pure functions, no query, no sandbox call.

What the sandbox saw (a SandboxResult) becomes the registry's services.RunOutcome: status,
an actionable reason, and the forensic fields, every value from the plugin made storable
first (plugins_app.untrusted). The facts come from the result's fields (phase, limit, fault,
message, frames, host_failure), never from its sentences: those are quoted, not parsed.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from django.db.models import CharField

from plugins_app import reasons, reasons_cancel, reasons_environment, services, untrusted
from plugins_app.models import Plugin, PluginRun, RunStatus
from sandbox import Fault, Frame, Limits, Outcome, Phase, SandboxResult

RESULT_STORE_CHARS = 64 * 1024  # results above this are stored as a truncated JSON text


OUTPUT_TAIL_CHARS = 4000  # of stdout and of stderr, kept on the run row


MESSAGE_CHARS = 500  # of an exception message, quoted in a reason


TRACEBACK_CHARS = 64 * 1024  # of a plugin's traceback, kept from its end (where it raised)


def max_chars(model: type[Plugin] | type[PluginRun], name: str) -> int:
    field = model._meta.get_field(name)
    assert isinstance(field, CharField), f"{model.__name__}.{name} is not a CharField"
    assert field.max_length is not None
    return field.max_length


ERROR_TYPE_CHARS = max_chars(PluginRun, "error_type")


SIGNAL_CHARS = max_chars(PluginRun, "signal")


EXIT_CODE_RANGE = (-(2**31), 2**31 - 1)  # PluginRun.exit_code, an IntegerField


ENVIRONMENT_CHARS = 64 * 1024  # of a run's environment fingerprint, as JSON text
PEAK_RSS_RANGE = (0, 2**63 - 1)  # PluginRun.peak_rss_kb, a PositiveBigIntegerField


DURATION_MS_RANGE = (0.0, 1e12)  # about 30 years: beyond it a duration is not a measurement


def outcome_from_result(
    name: str, result: SandboxResult, limits: Limits, *, plugin_root: str = ""
) -> services.RunOutcome:
    """Map what the sandbox saw onto the registry's RunOutcome, forensic fields filled.

    timeout → TIMED_OUT; crashed and memory → CRASHED (the process had to be stopped); every
    other failure (exception, bad params, exit, unserialisable or oversized result) → FAILED.
    Every value from the plugin is made storable first (plugins_app.untrusted); what that
    changed is one of the run's warnings.
    """
    facts, changes = _run_facts(result)
    if result.ok:
        outcome, value_changes = _succeeded(name, result.value, facts)
        changes += value_changes
    else:
        # Reasons quote the numbers as stored; the texts are cleaned as the reason is built.
        numbers = {key: facts[key] for key in ("exit_code", "peak_rss_kb")}
        checked = dataclasses.replace(result, signal=facts["signal"] or None, **numbers)
        status, reason = _failed(name, checked, limits, plugin_root)
        outcome = services.RunOutcome(status=status, reason=untrusted.line(reason).value, **facts)
    warnings = [untrusted.line(warning, limit=MESSAGE_CHARS).value for warning in result.warnings]
    if changes:
        warnings.append(reasons.run_output_changed(plugin=name, changes=changes))
    return dataclasses.replace(outcome, warnings=tuple(warnings))


def _run_facts(result: SandboxResult) -> tuple[dict[str, Any], list[str]]:
    """The run row's forensic fields from a sandbox result, storable, and what was changed."""
    cleaned: dict[str, untrusted.Cleaned[Any]] = {
        "error_type": untrusted.line(result.error_type, limit=ERROR_TYPE_CHARS),
        "traceback": untrusted.block(result.traceback, limit=TRACEBACK_CHARS, keep="end"),
        "exit_code": untrusted.integer(
            result.exit_code, low=EXIT_CODE_RANGE[0], high=EXIT_CODE_RANGE[1]
        ),
        "signal": untrusted.line(result.signal, limit=SIGNAL_CHARS),
        "peak_rss_kb": untrusted.integer(
            result.peak_rss_kb, low=PEAK_RSS_RANGE[0], high=PEAK_RSS_RANGE[1]
        ),
        "duration_ms": untrusted.number(
            result.duration_ms, low=DURATION_MS_RANGE[0], high=DURATION_MS_RANGE[1]
        ),
        "stdout_tail": untrusted.block(result.stdout[-OUTPUT_TAIL_CHARS:]),
        "stderr_tail": untrusted.block(result.stderr[-OUTPUT_TAIL_CHARS:]),
    }
    facts: dict[str, Any] = {
        "outcome": result.outcome.value,
        "memory_mechanism": untrusted.line(result.memory_mechanism, limit=32).value,
        "mode": untrusted.line(result.mode, limit=16).value,
        "environment": _environment(result.warmup_value),
    }
    changes = []
    for field, (value, changed) in cleaned.items():
        facts[field] = value
        label = field.removesuffix("_tail")
        changes += [f"{label}: {change}" for change in changed]
    return facts, changes


def _environment(value: object) -> dict[str, Any]:
    """The fingerprint the plugin's warm host reported, storable; {} when it is not one."""
    if not isinstance(value, dict):
        return {}
    try:
        if len(json.dumps(value)) > ENVIRONMENT_CHARS:
            return {}
        cleaned: dict[str, Any] = untrusted.data(value).value
    except (TypeError, ValueError, RecursionError):
        return {}
    return cleaned


def _succeeded(
    name: str, value: Any, facts: dict[str, Any]
) -> tuple[services.RunOutcome, list[str]]:
    changes: list[str] = []
    try:
        text = json.dumps(value, allow_nan=False)
        if untrusted.has_unstorable(text):
            value, changed = untrusted.data(value)
            changes = [f"result: {change}" for change in changed]
            text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        facts.update(outcome=Outcome.UNSERIALISABLE.value, error_type=type(exc).__name__)
        reason = reasons.run_unserialisable(plugin=name, detail=shorten(str(exc)))
        return services.RunOutcome(status=RunStatus.FAILED, reason=reason, **facts), []
    if len(text) > RESULT_STORE_CHARS:
        truncated = services.RunOutcome(
            status=RunStatus.SUCCEEDED,
            result=text[:RESULT_STORE_CHARS],
            result_truncated=True,
            **facts,
        )
        return truncated, changes
    return services.RunOutcome(
        status=RunStatus.SUCCEEDED, result=json.loads(text), **facts
    ), changes


def _failed(
    name: str, result: SandboxResult, limits: Limits, plugin_root: str
) -> tuple[RunStatus, str]:
    outcome = result.outcome
    if outcome == Outcome.CANCELLED:  # its run was cancelled: the row already says by whom
        return RunStatus.CANCELLED, reasons_cancel.run_cancelled_in_call(plugin=name)
    if result.phase == Phase.WARM_UP:
        # The warm host never got to run(): timeout_s or the run's params are not the cause.
        if result.fault == Fault.LOAD:
            # The plugin's import or setup() raised: its own words and line, not the line of
            # the portal's loader that re-raised it in the warm-up.
            return RunStatus.FAILED, reasons.run_load_failed(plugin=name, message=_message(result))
        crashed = outcome in (Outcome.CRASHED, Outcome.MEMORY)
        status = RunStatus.CRASHED if crashed else RunStatus.FAILED
        what = result.host_failure or result.error or outcome.value
        return status, reasons.run_warmup_failed(plugin=name, detail=shorten(what))
    if outcome == Outcome.TIMEOUT:
        if result.limit == "cpu_s":
            return RunStatus.TIMED_OUT, reasons.run_cpu_exceeded(plugin=name, cpu_s=limits.cpu_s)
        return RunStatus.TIMED_OUT, reasons.run_timed_out(plugin=name, timeout_s=limits.timeout_s)
    if outcome == Outcome.MEMORY and result.limit == "address_space_mb":
        return RunStatus.CRASHED, reasons_environment.run_out_of_address_space(
            plugin=name, address_space_mb=limits.address_space_mb
        )
    if outcome == Outcome.MEMORY:
        return RunStatus.CRASHED, reasons.run_out_of_memory(
            plugin=name, memory_mb=limits.memory_mb, peak_rss_kb=result.peak_rss_kb
        )
    if outcome == Outcome.CRASHED and result.limit == "max_restarts":
        return RunStatus.CRASHED, reasons_environment.run_resident_crash_loop(
            plugin=name, detail=shorten(result.error or "")
        )
    if outcome == Outcome.CRASHED:
        return RunStatus.CRASHED, reasons.run_crashed(
            plugin=name, signal=result.signal, exit_code=result.exit_code
        )
    if outcome == Outcome.EXITED:
        return RunStatus.FAILED, reasons.run_exited(plugin=name, exit_code=result.exit_code)
    if outcome == Outcome.DISK_LIMIT:
        return RunStatus.FAILED, reasons.run_disk_exceeded(
            plugin=name, disk_mb=limits.disk_mb, used_kb=result.disk_used_kb
        )
    if outcome == Outcome.OUTPUT_LIMIT:
        detail = f"more than limits.result_bytes ({limits.result_bytes} bytes) as JSON"
        return RunStatus.FAILED, reasons.run_result_too_large(plugin=name, detail=detail)
    if outcome == Outcome.UNSERIALISABLE:
        return RunStatus.FAILED, reasons.run_unserialisable(plugin=name, detail=_message(result))
    if outcome == Outcome.ERROR:
        return RunStatus.FAILED, _error_reason(name, result, plugin_root)
    return RunStatus.FAILED, reasons.run_sandbox_failure(
        plugin=name, detail=shorten(result.error or outcome.value)
    )


def _error_reason(name: str, result: SandboxResult, plugin_root: str) -> str:
    if result.fault == Fault.PARAMS:
        return reasons.run_bad_params(plugin=name, message=_message(result))
    if result.fault == Fault.LOAD:
        return reasons.run_load_failed(plugin=name, message=_message(result))
    error_type = untrusted.line(result.error_type or "Exception", limit=ERROR_TYPE_CHARS).value
    where = _own_frame(result.frames, plugin_root)
    return reasons.run_raised(
        plugin=name,
        error_type=error_type,
        message=_message(result),
        where=where and shorten(where),
    )


def _message(result: SandboxResult) -> str:
    """The exception's message, as the process that raised it reported it; when no exception
    of that process explains the failure (no traceback: the portal refused the value that
    arrived), the sandbox's own sentence."""
    if result.traceback is None:
        return shorten(result.error or "(no message)")
    return shorten(result.message or "") or "(no message)"


def _own_frame(frames: list[Frame], plugin_root: str) -> str | None:
    """The deepest frame inside the plugin's own files, as 'path:line in function'."""
    own = [frame for frame in frames if plugin_root and frame.file.startswith(plugin_root)]
    return str(own[-1]) if own else None


def shorten(text: str) -> str:
    """A plugin's words for a reason: one terminal-safe line of at most MESSAGE_CHARS."""
    return untrusted.line(" ".join(text.split()), limit=MESSAGE_CHARS).value
