"""What the call process knew travels as fields of the result: phase, message, location and
the limit that was hit, on every way a call can end."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

import sandbox
from sandbox import (
    Limits,
    Outcome,
    Phase,
    Preload,
    SandboxResult,
    configure_sandbox,
    run_plugin_sandboxed,
    sandbox_status,
    shutdown_sandbox,
)
from tests.sandbox.source import line_of
from tests.sandbox_targets import basic, warm
from tests.sandbox_targets.process_checks import new_marker

BASIC = "tests.sandbox_targets.basic"
HOSTILE = "tests.sandbox_targets.hostile"
WARM = "tests.sandbox_targets.warm"
HOST = "tests.sandbox_targets.hostile_host"
RESULT = "tests.sandbox_targets.hostile_result"
FAST = Limits(timeout_s=10)


@pytest.fixture(scope="module", autouse=True)
def stop_hosts():
    yield
    shutdown_sandbox()


def call(target: str, *args: object, **kwargs: object) -> SandboxResult:
    kwargs.setdefault("limits", FAST)
    return run_plugin_sandboxed(target, *args, **kwargs)


def facts(result: SandboxResult) -> tuple:
    return result.outcome, result.phase, result.limit


class TestWhatTheCallProcessSaid:
    def test_ok__no_failure_facts(self):
        """A call that returned has no phase, message, location or limit."""
        result = call(f"{BASIC}:add", 1, 2)
        assert (result.ok, result.phase, result.message, result.location, result.limit) == (
            True,
            None,
            None,
            None,
            None,
        )

    def test_exception_in_the_call__phase_call_message_and_location(self):
        """An exception in the target says phase call, its own message, and where it rose."""
        result = call(f"{BASIC}:divide", 1, 0)
        assert facts(result) == (Outcome.ERROR, Phase.CALL, None)
        assert result.message == "division by zero"
        line = line_of(basic.divide, "return a / b")
        assert result.location == f"{basic.__file__}:{line} in divide"

    def test_target_not_importable__phase_import(self):
        """A target whose module cannot be imported fails in phase import, with the message."""
        result = call("tests.sandbox_targets.no_such_module:run")
        assert facts(result) == (Outcome.ERROR, Phase.IMPORT, None)
        assert result.message == "No module named 'tests.sandbox_targets.no_such_module'"
        assert result.location

    def test_system_exit_with_text__phase_call_and_the_text(self):
        """SystemExit('bye') ends the call in phase call, its text as the message."""
        result = call(f"{BASIC}:raise_system_exit", "bye")
        assert facts(result) == (Outcome.EXITED, Phase.CALL, None)
        assert result.message == "bye"

    def test_value_json_cannot_carry__phase_serialise(self):
        """A return value that is not JSON data fails in phase serialise, the encoder's
        message saying why."""
        result = call(f"{BASIC}:unpicklable")
        assert facts(result) == (Outcome.UNSERIALISABLE, Phase.SERIALISE, None)
        assert "is not JSON serializable" in (result.message or "")

    def test_value_too_large__phase_serialise_limit_result_bytes(self):
        """A value past result_bytes names that limit, in phase serialise."""
        result = call(f"{BASIC}:big_value", 2_000_000, limits=FAST.replace(result_bytes=10**6))
        assert facts(result) == (Outcome.OUTPUT_LIMIT, Phase.SERIALISE, "result_bytes")

    def test_out_of_memory__limit_memory_mb(self):
        """Resident memory past memory_mb names that limit; the host killed it (no phase)."""
        result = call(f"{HOSTILE}:allocate_forever", limits=Limits(timeout_s=20, memory_mb=256))
        assert facts(result) == (Outcome.MEMORY, None, "memory_mb")

    def test_out_of_address_space__limit_address_space_mb(self):
        """A MemoryError under address_space_mb names that limit, in phase call."""
        limits = Limits(timeout_s=20, memory_mb=None, address_space_mb=256)
        result = call(f"{HOSTILE}:allocate_forever", limits=limits)
        assert facts(result) == (Outcome.MEMORY, Phase.CALL, "address_space_mb")

    def test_output_cut__limit_output_bytes(self):
        """A call whose output was cut to output_bytes still succeeds, naming that limit."""
        result = call(f"{HOSTILE}:flood", 100_000, "stdout", limits=FAST.replace(output_bytes=1000))
        assert (result.outcome, result.phase, result.limit) == (Outcome.OK, None, "output_bytes")

    def test_envelope_naming_no_known_phase__reported_not_believed(self):
        """A record on fd 3 that claims a phase the sandbox does not know is garbage."""
        forged = {"outcome": "error", "phase": "lunch", "message": "made up"}
        result = call(f"{RESULT}:forged_envelope", forged)
        assert facts(result) == (Outcome.EXITED, None, None)
        assert result.message is None
        assert any("envelope field 'phase'" in warning for warning in result.warnings)


class TestWhenTheProcessSaidNothing:
    def test_wall_clock_timeout__limit_timeout_s(self):
        """A call killed at its deadline names timeout_s; nobody knows its phase."""
        result = call(f"{HOSTILE}:sleep", 30, limits=Limits(timeout_s=0.5))
        assert facts(result) == (Outcome.TIMEOUT, None, "timeout_s")
        assert (result.message, result.location) == (None, None)

    def test_cpu_limit__limit_cpu_s(self):
        """A call that used up cpu_s names that limit."""
        result = call(f"{HOSTILE}:infinite_loop", limits=Limits(timeout_s=20, cpu_s=1))
        assert facts(result) == (Outcome.TIMEOUT, None, "cpu_s")

    def test_disk_budget__limit_disk_mb(self, tmp_path):
        """A call stopped past its disk budget names disk_mb."""
        where = tmp_path / "where"
        result = call(f"{HOSTILE}:fill_disk", 4, 1, str(where), limits=FAST.replace(disk_mb=2))
        assert facts(result) == (Outcome.DISK_LIMIT, None, "disk_mb")

    def test_crash__no_phase_no_limit(self):
        """A segfault is no limit's doing, and the process said nothing of its phase."""
        result = call(f"{HOSTILE}:segfault")
        assert facts(result) == (Outcome.CRASHED, None, None)
        assert (result.message, result.location) == (None, None)

    def test_os_exit__no_phase(self):
        """A process that called os._exit() ended without saying where it was."""
        result = call(f"{BASIC}:hard_exit", 3)
        assert facts(result) == (Outcome.EXITED, None, None)

    def test_host_lost_mid_call__no_phase(self):
        """A call whose host was killed under it is a sandbox failure of unknown phase."""
        call(f"{BASIC}:add", 1, 2)  # the default host is up
        (host,) = [h["pid"] for h in sandbox_status() if h["preload"] is None]
        killer = threading.Timer(0.5, os.kill, (host, signal.SIGKILL))
        killer.start()
        result = call(f"{HOSTILE}:sleep", 5)
        killer.join()
        assert facts(result) == (Outcome.SANDBOX_FAILURE, None, None)

    def test_host_that_cannot_start__phase_setup(self):
        """When the sandbox cannot even start its host, the call fails in phase setup."""
        previous = configure_sandbox(python="/nonexistent/python3")
        try:
            result = call(f"{BASIC}:add", 1, 2)
        finally:
            configure_sandbox(previous)
        assert facts(result) == (Outcome.SANDBOX_FAILURE, Phase.SETUP, None)

    def test_value_the_portal_cannot_parse__phase_serialise(self):
        """A value that is not JSON when it arrives fails in phase serialise, saying why."""
        result = call(f"{HOST}:noop", preload=Preload(f"{HOST}:answer_with_pickle_bomb"))
        assert facts(result) == (Outcome.UNSERIALISABLE, Phase.SERIALISE, None)
        assert result.message


class TestWarmUpFailures:
    def test_warm_up_raises__phase_warm_up_with_its_message_and_location(self, tmp_path):
        """A Preload warm-up that raises: phase warm-up, its message and where it rose."""
        preload = Preload(f"{WARM}:warm_raises", (str(tmp_path / "log"),))
        result = call(f"{WARM}:state", preload=preload)
        assert facts(result) == (Outcome.ERROR, Phase.WARM_UP, None)
        assert result.message == "cannot load model weights"
        line = line_of(warm.warm_raises, "raise RuntimeError")
        assert result.location == f"{warm.__file__}:{line} in warm_raises"

    def test_warm_up_crashes__phase_warm_up(self, tmp_path):
        """A warm-up that kills its host with a signal is a crash in phase warm-up."""
        preload = Preload(f"{WARM}:warm_segfaults", (str(tmp_path / "log"),))
        result = call(f"{WARM}:state", preload=preload)
        assert facts(result) == (Outcome.CRASHED, Phase.WARM_UP, None)

    def test_warm_up_exits__phase_warm_up(self, tmp_path):
        """A warm-up that exits its host fails in phase warm-up."""
        preload = Preload(f"{WARM}:warm_exits", (str(tmp_path / "log"),))
        result = call(f"{WARM}:state", preload=preload)
        assert facts(result) == (Outcome.ERROR, Phase.WARM_UP, None)

    def test_slow_warm_up__limit_warmup_timeout_s(self):
        """A warm-up past SandboxConfig.warmup_timeout_s names that setting."""
        previous = configure_sandbox(warmup_timeout_s=1.0, start_timeout_s=3.0)
        try:
            result = call(f"{WARM}:state", preload=Preload(f"{WARM}:warm", (new_marker(), 30)))
        finally:
            configure_sandbox(previous)
        assert facts(result) == (Outcome.TIMEOUT, Phase.WARM_UP, "warmup_timeout_s")

    def test_warm_up_past_the_calls_timeout__limit_timeout_s(self):
        """A warm-up cut short by the waiting call's own timeout names timeout_s."""
        preload = Preload(f"{WARM}:warm", (new_marker(), 30))
        result = call(f"{WARM}:state", preload=preload, limits=Limits(timeout_s=1))
        assert facts(result) == (Outcome.TIMEOUT, Phase.WARM_UP, "timeout_s")


class TestAsData:
    def test_to_dict__json_with_the_phase_as_its_text(self):
        """to_dict() stays JSON-serialisable, the phase as its plain text."""
        data = json.loads(json.dumps(call(f"{BASIC}:divide", 1, 0).to_dict()))
        assert (data["phase"], data["message"], data["limit"]) == ("call", "division by zero", None)
        assert data["location"].endswith(" in divide")

    def test_phase__exported_with_the_values_it_can_take(self):
        """Phase is part of the public API, with the five phases a call can fail in."""
        assert sandbox.Phase is Phase
        assert [phase.value for phase in Phase] == [
            "import",
            "warm-up",
            "setup",
            "call",
            "serialise",
        ]
