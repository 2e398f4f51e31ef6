"""Why a host could not start, worded once, and the result of the calls that needed it."""

from __future__ import annotations

import dataclasses

from sandbox.messages import ExceptionFacts
from sandbox.portal.outcome import copy_exception_facts, failure_result
from sandbox.portal.wire import HelloFields, ProtocolError
from sandbox.result import Outcome, Phase, SandboxResult
from sandbox.targets import Preload
from sandbox.zygote import linux


@dataclasses.dataclass
class StartFailure:
    """Why a host could not be started; becomes the result of the calls that needed it.

    Its reason is "<subject> <event> (<advice>)": the host or its warm-up, what happened to
    it (the result's ``host_failure``), and what to do about it.
    """

    outcome: Outcome
    error_type: str
    subject: str
    event: str
    advice: str
    phase: Phase = Phase.SETUP  # the host's start, or (with a Preload) its warm-up
    traceback: str | None = None
    signal: str | None = None
    exit_code: int | None = None
    message: str | None = None
    location: str | None = None
    limit: str | None = None
    exception: ExceptionFacts | None = None  # what the host said of its warm-up's exception

    @property
    def reason(self) -> str:
        return f"{self.subject} {self.event} ({self.advice})"

    def result(self, name: str, duration_ms: float) -> SandboxResult:
        result = failure_result(
            name,
            self.outcome,
            self.error_type,
            f"Plugin call {name!r} could not run: {self.reason}",
            duration_ms,
            traceback=self.traceback,
            signal=self.signal,
            exit_code=self.exit_code,
            phase=self.phase,
            message=self.message,
            location=self.location,
            limit=self.limit,
            host_failure=self.event,
        )
        if self.exception is not None:
            copy_exception_facts(result, self.exception)
        return result


def what_starts(preload: Preload | None) -> str:
    """What the failure is about, for the sentence: the host, or its warm-up."""
    if preload is None:
        return "the sandbox host"
    return f"the Preload warm-up {preload.target!r}"


def _phase(preload: Preload | None) -> Phase:
    """A host with a Preload fails in its warm-up (plugin code); one without, in setup."""
    return Phase.SETUP if preload is None else Phase.WARM_UP


def not_spawned(problem: OSError) -> StartFailure:
    return StartFailure(
        Outcome.SANDBOX_FAILURE,
        type(problem).__name__,
        what_starts(None),
        f"could not be started ({problem})",
        "check SandboxConfig.python and the machine's process limits",
    )


def start_timeout(preload: Preload | None, timeout: float, bounded_by_call: bool) -> StartFailure:
    setting = "warmup_timeout_s" if preload is not None else "start_timeout_s"
    fix = f"make the warm-up faster or raise SandboxConfig.{setting}"
    if bounded_by_call:
        fix = "make the warm-up faster or give the call a longer timeout"
    return StartFailure(
        Outcome.TIMEOUT,
        "Timeout",
        what_starts(preload),
        f"did not finish starting within {timeout:g} s and was killed",
        f"{fix}; the next call tries again",
        phase=_phase(preload),
        limit="timeout_s" if bounded_by_call else setting,
    )


def malformed_handshake(preload: Preload | None, problem: ProtocolError) -> StartFailure:
    return StartFailure(
        Outcome.SANDBOX_FAILURE,
        "ProtocolError",
        what_starts(preload),
        f"sent a malformed handshake ({problem}), so the host was killed",
        "the plugin's import or warm-up code writes to the sandbox's control socket or "
        "patches the sandbox; fix the plugin",
        phase=_phase(preload),
    )


def died_while_starting(preload: Preload | None, code: int | None) -> StartFailure:
    """The host ended (exit code, or -signal; None: it did not) before its handshake."""
    what = what_starts(preload)
    fix = (
        "fix the plugin's import/warm-up; the next call retries it once"
        if preload is not None
        else "check the portal's stderr for the host's error"
    )
    if code is not None and code < 0:
        sig = linux.signal_name(-code)
        return StartFailure(
            Outcome.CRASHED if preload is not None else Outcome.SANDBOX_FAILURE,
            sig,
            what,
            f"killed the sandbox host with {sig} ({linux.signal_description(-code)}) before "
            "it was ready",
            fix,
            phase=_phase(preload),
            signal=sig,
        )
    outcome = Outcome.ERROR if preload is not None else Outcome.SANDBOX_FAILURE
    return StartFailure(
        outcome,
        "WarmupExited" if preload is not None else "SandboxFailure",
        what,
        f"ended the sandbox host with exit code {code} before it was ready",
        fix,
        phase=_phase(preload),
        exit_code=code,
    )


def warm_up_raised(preload: Preload | None, hello: HelloFields) -> StartFailure:
    if hello["detail"] == {"cuda_initialized": True} and hello["fault"] == "unavailable":
        return StartFailure(
            Outcome.ERROR,
            "CUDAInitialized",
            what_starts(preload),
            f"was refused: {hello['message']}",
            "declare mode = 'resident' for a plugin that uses CUDA, or touch CUDA only in "
            "run(), not at import or in setup()",
            phase=Phase.WARM_UP,
            message=hello["message"],
            exception=hello,
        )
    kind = hello["error_type"] or "Exception"
    message = hello["message"]
    location = hello["location"]
    detail = f"{kind}: {message}" if message else kind
    where = f" at {location}" if location else ""
    return StartFailure(
        Outcome.ERROR,
        kind,
        what_starts(preload),
        f"failed: {detail}{where}",
        "fix the plugin's import/warm-up; the next call retries it once",
        phase=Phase.WARM_UP,
        traceback=hello["traceback"],
        message=message,
        location=location,
        exception=hello,
    )
