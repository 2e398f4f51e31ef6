"""What a call's process knows of a failure beyond phase, message, location and limit: the
frames of its exception, the kind of failure the exception declares (with its data), and
what happened to a host that could not start; all as fields, from real sandboxed calls."""

from __future__ import annotations

import json

import pytest

import sandbox
from sandbox import (
    Fault,
    Frame,
    Limits,
    Outcome,
    Phase,
    Preload,
    SandboxResult,
    configure_sandbox,
    run_plugin_sandboxed,
    shutdown_sandbox,
)
from sandbox.zygote.protocol import FRAMES_LIMIT
from tests.sandbox.source import line_of
from tests.sandbox_targets import faults, warm

BASIC = "tests.sandbox_targets.basic"
FAULTS = "tests.sandbox_targets.faults"
WARM = "tests.sandbox_targets.warm"
RESULT = "tests.sandbox_targets.hostile_result"
FAST = Limits(timeout_s=10)


@pytest.fixture(scope="module", autouse=True)
def stop_hosts():
    yield
    shutdown_sandbox()


def call(target: str, *args: object, **kwargs: object) -> SandboxResult:
    kwargs.setdefault("limits", FAST)
    return run_plugin_sandboxed(target, *args, **kwargs)


class TestFrames:
    def test_exception__frames_outermost_first_down_to_where_it_rose(self):
        """The frames run from the sandbox's call to the library that raised, the target's
        own line among them, and the last one is the location."""
        result = call(f"{FAULTS}:parse_broken")
        own = Frame(faults.__file__, line_of(faults.parse_broken, "json.loads"), "parse_broken")
        files = [frame.file for frame in result.frames]
        assert own in result.frames
        assert files[-1] == json.decoder.__file__
        assert files.index(faults.__file__) < len(files) - 1
        assert str(result.frames[-1]) == result.location

    def test_recursion__each_repeated_frame_once(self):
        """A RecursionError's thousand identical frames arrive as one, the list bounded."""
        result = call(f"{FAULTS}:recurse")
        line = line_of(faults.recurse, "return recurse()")
        assert result.error_type == "RecursionError"
        assert result.frames.count(Frame(faults.__file__, line, "recurse")) == 1
        assert len(result.frames) <= FRAMES_LIMIT

    def test_returned__no_frames(self):
        """A call that returned has no frames."""
        assert call(f"{BASIC}:add", 1, 2).frames == []

    def test_warm_up_raises__frames_of_the_warm_up(self, tmp_path):
        """A warm-up's exception brings its frames too, down to the warm-up's own line."""
        preload = Preload(f"{WARM}:warm_raises", (str(tmp_path / "log"),))
        result = call(f"{WARM}:state", preload=preload)
        line = line_of(warm.warm_raises, "raise RuntimeError")
        assert result.frames[-1] == Frame(warm.__file__, line, "warm_raises")


class TestDeclaredFault:
    def test_exception_declaring_a_fault__fault_and_detail_as_fields(self):
        """An exception whose class names a kind of failure, with data attached, brings both."""
        detail = {"missing": [{"kind": "env", "item": "API_KEY"}]}
        result = call(f"{FAULTS}:raise_declared", detail)
        assert (result.outcome, result.phase) == (Outcome.ERROR, Phase.CALL)
        assert (result.fault, result.detail) == (Fault.UNAVAILABLE, detail)
        assert result.message == "the call's process lacks something"

    def test_fault_declared_by_a_base_class__without_detail(self):
        """The kind is read from the exception's class (or its bases); no data, no detail."""
        result = call(f"{FAULTS}:raise_params")
        assert (result.fault, result.detail, result.error_type) == (
            Fault.PARAMS,
            None,
            "ParamsDidNotFit",
        )

    def test_ordinary_exception__no_fault(self):
        """An exception that declares nothing is the target's own failure: no fault."""
        result = call(f"{BASIC}:divide", 1, 0)
        assert (result.outcome, result.fault, result.detail) == (Outcome.ERROR, None, None)

    @pytest.mark.parametrize("target", ["raise_wrong_kind", "raise_chameleon"])
    def test_fault_not_a_name_or_answered_by_getattr__ignored(self, target):
        """A fault that is not text, or one only a __getattr__ hook answers, is no fault."""
        result = call(f"{FAULTS}:{target}")
        assert (result.outcome, result.fault) == (Outcome.ERROR, None)
        assert result.warnings == []

    @pytest.mark.parametrize("target", ["raise_unencodable_detail", "raise_huge_detail"])
    def test_detail_not_json_or_too_large__dropped_fault_kept(self, target):
        """Data that is not JSON, or too large to travel, is left out; the fault still comes."""
        result = call(f"{FAULTS}:{target}")
        assert (result.outcome, result.fault, result.detail) == (
            Outcome.ERROR,
            Fault.UNAVAILABLE,
            None,
        )

    def test_warm_up_declaring_a_fault__fault_and_detail_on_the_result(self):
        """A warm-up's exception declares its kind and data to the calls that needed it."""
        result = call(f"{WARM}:state", preload=Preload(f"{FAULTS}:warm_fails_to_load"))
        assert (result.phase, result.fault, result.detail) == (
            Phase.WARM_UP,
            Fault.UNAVAILABLE,
            {"missing": ["weights"]},
        )


class TestForgedFacts:
    @pytest.mark.parametrize(
        ("forged", "field"),
        [
            ({"outcome": "error", "fault": "lunch"}, "fault"),
            ({"outcome": "error", "frames": [["a.py", 1, "f"]]}, "frames"),
            (
                {"outcome": "error", "frames": [{"file": "a.py", "line": "1", "function": "f"}]},
                "frames",
            ),
        ],
        ids=["unknown-fault", "frame-not-an-object", "line-not-a-number"],
    )
    def test_envelope_with_a_bad_fault_or_frame__garbage_not_believed(self, forged, field):
        """A record on fd 3 naming a kind the sandbox does not know, or frames of the wrong
        shape, is garbage: reported in warnings, none of it on the result."""
        result = call(f"{RESULT}:forged_envelope", forged)
        assert (result.outcome, result.fault, result.frames) == (Outcome.EXITED, None, [])
        assert any(f"envelope field {field!r}" in warning for warning in result.warnings)


class TestHostFailure:
    def test_warm_up_exits__what_happened_to_the_host(self, tmp_path):
        """A warm-up that exits says so as a clause of its own, the one the error quotes."""
        preload = Preload(f"{WARM}:warm_exits", (str(tmp_path / "log"),))
        result = call(f"{WARM}:state", preload=preload)
        assert result.host_failure == "ended the sandbox host with exit code 3 before it was ready"
        assert result.host_failure in (result.error or "")

    def test_warm_up_raises__the_exception_and_where(self, tmp_path):
        """A warm-up that raises: the clause names the exception and where it rose."""
        preload = Preload(f"{WARM}:warm_raises", (str(tmp_path / "log"),))
        result = call(f"{WARM}:state", preload=preload)
        line = line_of(warm.warm_raises, "raise RuntimeError")
        assert result.host_failure == (
            f"failed: RuntimeError: cannot load model weights at {warm.__file__}:{line} in "
            "warm_raises"
        )

    def test_host_that_cannot_start__says_so(self):
        """A host the sandbox cannot even start says why, in phase setup."""
        previous = configure_sandbox(python="/nonexistent/python3")
        try:
            result = call(f"{BASIC}:add", 1, 2)
        finally:
            configure_sandbox(previous)
        assert result.phase == Phase.SETUP
        assert (result.host_failure or "").startswith("could not be started (")

    def test_call_that_ran__no_host_failure(self):
        """A call its host ran has no host failure, whatever the call did."""
        assert call(f"{BASIC}:divide", 1, 0).host_failure is None


class TestAsData:
    def test_to_dict__frames_as_objects_and_fault_as_text(self):
        """to_dict() stays JSON: each frame an object, the fault its plain text."""
        data = json.loads(json.dumps(call(f"{FAULTS}:raise_params").to_dict()))
        assert data["fault"] == "params"
        assert data["frames"][-1] == {
            "file": faults.__file__,
            "line": line_of(faults.raise_params, "raise ParamsDidNotFit"),
            "function": "raise_params",
        }
        assert (data["detail"], data["host_failure"]) == (None, None)

    def test_fault__exported_with_its_kinds(self):
        """Fault and Frame are part of the public API; Fault names three kinds of failure."""
        assert (sandbox.Fault, sandbox.Frame) == (Fault, Frame)
        assert [fault.value for fault in Fault] == ["params", "load", "unavailable"]
