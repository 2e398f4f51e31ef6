"""run_outcomes: a SandboxResult, built here as a value (no database, no sandbox), becomes a
run's status and reason from the result's fields alone, never from its sentences."""

from __future__ import annotations

import pytest

from plugins_app.models import RunStatus
from plugins_app.run_outcomes import outcome_from_result
from sandbox import Fault, Frame, Limits, Outcome, Phase, SandboxResult

LIMITS = Limits(timeout_s=2, cpu_s=3, memory_mb=256, result_bytes=1000, disk_mb=200)
ROOT = "/srv/plugins"
# What the sandbox's error sentence may say; the mapping must never read it for facts.
DECOY = (
    "Plugin call 'x' could not run: the Preload warm-up 'y' failed: CPUTimeLimit "
    "(PluginParamsError) (advice)"
)
TRACEBACK = (
    "Traceback (most recent call last):\n"
    f'  File "{ROOT}/p.py", line 99, in decoy\n'
    "Oops: what the traceback text says\n"
)


def failed(outcome: Outcome, **fields: object) -> SandboxResult:
    fields.setdefault("error", DECOY)
    return SandboxResult(ok=False, value=None, outcome=outcome, **fields)  # type: ignore[arg-type]


def mapped(result: SandboxResult, limits: Limits = LIMITS) -> tuple[RunStatus, str]:
    outcome = outcome_from_result("p", result, limits, plugin_root=ROOT)
    return outcome.status, outcome.reason


class TestWarmUp:
    @pytest.mark.parametrize(
        ("outcome", "status"),
        [
            (Outcome.ERROR, RunStatus.FAILED),
            (Outcome.TIMEOUT, RunStatus.FAILED),
            (Outcome.SANDBOX_FAILURE, RunStatus.FAILED),
            (Outcome.CRASHED, RunStatus.CRASHED),
            (Outcome.MEMORY, RunStatus.CRASHED),
        ],
    )
    def test_phase_warm_up__says_what_happened_to_the_warm_host(self, outcome, status):
        """A failure in phase warm-up quotes what happened to the host, whatever the outcome;
        only a crash or running out of memory makes the run CRASHED."""
        result = failed(
            outcome,
            phase=Phase.WARM_UP,
            limit="timeout_s",
            host_failure="ended the sandbox host with exit code 3\nbefore it was ready",
        )
        assert mapped(result) == (
            status,
            "Plugin 'p' could not be prepared for this run: its import or setup() in the warm "
            "host ended the sandbox host with exit code 3 before it was ready (fix the "
            "plugin's import or setup(), then reload the plugin)",
        )

    def test_error_worded_like_a_warm_up_failure__the_plugins_own_exception(self):
        """A call's exception whose words look like a warm-up failure is still run() raising."""
        result = failed(
            Outcome.ERROR, phase=Phase.CALL, error_type="Oops", message="m", traceback=TRACEBACK
        )
        assert mapped(result)[1].startswith("Plugin 'p' raised Oops in run(): m ")


class TestLimits:
    def test_timeout_with_limit_cpu_s__cpu_time_reason(self):
        """limit cpu_s makes a timeout a CPU-time reason, whatever the error type says."""
        result = failed(Outcome.TIMEOUT, limit="cpu_s", error_type="Timeout")
        assert mapped(result) == (
            RunStatus.TIMED_OUT,
            "Plugin 'p' used more than 3 s of CPU time and was stopped (raise limits.cpu_s in "
            "the plugin if the work needs it, or look for a busy loop)",
        )

    def test_timeout_with_limit_timeout_s__wall_clock_reason(self):
        """limit timeout_s is the wall clock, even with an error type that names the CPU."""
        result = failed(Outcome.TIMEOUT, limit="timeout_s", error_type="CPUTimeLimit")
        assert mapped(result) == (
            RunStatus.TIMED_OUT,
            "Plugin 'p' did not finish within its 2 s timeout and was stopped (raise "
            "limits.timeout_s in the plugin, or pass a longer timeout, if the work needs it)",
        )

    @pytest.mark.parametrize(
        ("result", "status", "reason"),
        [
            (
                failed(Outcome.MEMORY, limit="memory_mb", peak_rss_kb=300 * 1024),
                RunStatus.CRASHED,
                "Plugin 'p' ran out of its 256 MB memory limit (peak 300 MB resident) and was "
                "stopped (raise limits.memory_mb in the plugin, or give it smaller input)",
            ),
            (
                failed(Outcome.DISK_LIMIT, limit="disk_mb", disk_used_kb=230 * 1024),
                RunStatus.FAILED,
                "Plugin 'p' wrote 230 MB in its working directory, more than its 200 MB disk "
                "budget, and was stopped; its files there were removed (raise limits.disk_mb "
                "in the plugin, write less, or write large output elsewhere and return a "
                "reference)",
            ),
            (
                failed(Outcome.OUTPUT_LIMIT, limit="result_bytes"),
                RunStatus.FAILED,
                "Plugin 'p' returned a result that is too large: more than limits.result_bytes "
                "(1000 bytes) as JSON (return less data, or raise limits.result_bytes)",
            ),
        ],
        ids=["memory", "disk", "result-bytes"],
    )
    def test_other_limits__name_the_limit_and_the_figures(self, result, status, reason):
        """Memory, disk and result size say the limit and the figures the result holds."""
        assert mapped(result) == (status, reason)


class TestProcessEnded:
    def test_crashed__names_the_signal(self):
        """A crash names the signal that ended the process."""
        assert mapped(failed(Outcome.CRASHED, signal="SIGSEGV")) == (
            RunStatus.CRASHED,
            "Plugin 'p' crashed with signal SIGSEGV during run() (see the run's stderr tail; a "
            "native extension or the plugin's own code failed)",
        )

    def test_exited__names_the_exit_code(self):
        """A process that exited names its exit code."""
        assert mapped(failed(Outcome.EXITED, exit_code=4)) == (
            RunStatus.FAILED,
            "Plugin 'p' ended its process with exit code 4 during run() without returning a "
            "result (remove the sys.exit()/os._exit() call from the plugin)",
        )

    @pytest.mark.parametrize(
        ("error", "detail"), [("the host was lost", "the host was lost"), (None, "sandbox_failure")]
    )
    def test_sandbox_failure__quotes_the_sandbox_or_names_the_outcome(self, error, detail):
        """A failure of the sandbox itself quotes its sentence, or names the outcome without one."""
        assert mapped(failed(Outcome.SANDBOX_FAILURE, error=error)) == (
            RunStatus.FAILED,
            f"The sandbox failed while running plugin 'p': {detail} (check the portal log, "
            "then rerun)",
        )


class TestExceptions:
    def test_plugins_exception__message_field_and_deepest_own_frame(self):
        """run() raising quotes the message field and the deepest frame in the plugin's own
        files, not the innermost frame (a library's) nor what the traceback text says."""
        frames = [
            Frame("/portal/plugin_contract/loader.py", 120, "call_plugin"),
            Frame(f"{ROOT}/p.py", 7, "run"),
            Frame(f"{ROOT}/helpers.py", 3, "parse"),
            Frame("/usr/lib/python3.11/json/decoder.py", 355, "raw_decode"),
        ]
        result = failed(
            Outcome.ERROR,
            phase=Phase.CALL,
            error_type="JSONDecodeError",
            message="Expecting value:\nline 1",
            traceback=TRACEBACK,
            frames=frames,
        )
        assert mapped(result) == (
            RunStatus.FAILED,
            "Plugin 'p' raised JSONDecodeError in run(): Expecting value: line 1 at "
            f"{ROOT}/helpers.py:3 in parse (see the run's traceback; fix the plugin or its "
            "input, then rerun)",
        )

    def test_no_frame_in_the_plugins_files__no_place_named(self):
        """Without a frame in the plugin's files (only the traceback text has one), no place."""
        result = failed(
            Outcome.ERROR,
            error_type="KeyError",
            message="'k'",
            traceback=TRACEBACK,
            frames=[Frame("/usr/lib/python3.11/x.py", 1, "f")],
        )
        assert mapped(result)[1] == (
            "Plugin 'p' raised KeyError in run(): 'k' (see the run's traceback; fix the plugin "
            "or its input, then rerun)"
        )

    def test_exception_without_a_message__says_so(self):
        """An exception with an empty message is quoted as having none."""
        result = failed(Outcome.ERROR, error_type="Oops", message="", traceback=TRACEBACK)
        assert "raised Oops in run(): (no message) (see" in mapped(result)[1]

    @pytest.mark.parametrize(
        ("fault", "message", "reason"),
        [
            (
                Fault.PARAMS,
                "run() cannot take x",
                "Bad params for plugin 'p': run() cannot take x (fix the params, then run it "
                "again)",
            ),
            (
                Fault.LOAD,
                "setup() raised OSError: gone",
                "Plugin 'p' could not be imported or set up for this run: setup() raised "
                "OSError: gone (fix it, then reload the plugin)",
            ),
        ],
        ids=["params", "load"],
    )
    def test_fault_params_or_load__its_own_reason_whatever_the_exception_type(
        self, fault, message, reason
    ):
        """A params fault is the caller's mistake (bad params); a load fault says the plugin
        could not be imported or set up, and to reload it; each quotes the message."""
        result = failed(
            Outcome.ERROR, fault=fault, error_type="TypeError", message=message, traceback=TRACEBACK
        )
        assert mapped(result) == (RunStatus.FAILED, reason)

    @pytest.mark.parametrize("error_type", ["PluginParamsError", "PluginLoadError"])
    def test_loader_class_name_without_a_fault__the_plugins_own_exception(self, error_type):
        """An exception named like the loader's, declaring no fault, is run() raising."""
        result = failed(Outcome.ERROR, error_type=error_type, message="m", traceback=TRACEBACK)
        assert mapped(result)[1].startswith(f"Plugin 'p' raised {error_type} in run(): m (see")

    def test_fault_unavailable__run_raised(self):
        """An unavailable fault reaching the mapping (its report unusable) is run() raising."""
        result = failed(
            Outcome.ERROR,
            fault=Fault.UNAVAILABLE,
            error_type="PluginUnavailable",
            message="m",
            traceback=TRACEBACK,
        )
        assert mapped(result)[1].startswith("Plugin 'p' raised PluginUnavailable in run(): m")


class TestUnserialisable:
    def test_value_the_call_process_could_not_encode__the_encoders_message(self):
        """A value the call process could not encode quotes the encoder's message."""
        result = failed(
            Outcome.UNSERIALISABLE,
            phase=Phase.SERIALISE,
            error_type="TypeError",
            message="Object of type set is not JSON serializable",
            traceback=TRACEBACK,
        )
        assert mapped(result) == (
            RunStatus.FAILED,
            "Plugin 'p' returned a value that is not JSON-serialisable: Object of type set is "
            "not JSON serializable (return dicts, lists, strings, numbers, booleans or None)",
        )

    def test_value_the_portal_refused__the_sandboxs_sentence(self):
        """A value the portal refused on arrival (no exception in the call process) quotes
        the sandbox's sentence, which says what the portal refused and why."""
        result = failed(
            Outcome.UNSERIALISABLE,
            phase=Phase.SERIALISE,
            error="Plugin call 'x' returned a value that is not valid JSON data",
            message="Expecting value: line 1 column 1 (char 0)",
        )
        assert mapped(result)[1] == (
            "Plugin 'p' returned a value that is not JSON-serialisable: Plugin call 'x' "
            "returned a value that is not valid JSON data (return dicts, lists, strings, "
            "numbers, booleans or None)"
        )


def returned(value: object, **fields: object) -> SandboxResult:
    return SandboxResult(ok=True, value=value, outcome=Outcome.OK, **fields)  # type: ignore[arg-type]


class TestReturned:
    def test_json_value__stored_as_its_json_form(self):
        """A returned value is stored as JSON data (a tuple as a list), with no reason."""
        outcome = outcome_from_result("p", returned({"xs": (1, "a")}), LIMITS)
        assert (outcome.status, outcome.result, outcome.result_truncated, outcome.reason) == (
            RunStatus.SUCCEEDED,
            {"xs": [1, "a"]},
            False,
            "",
        )

    def test_value_over_the_stored_size__kept_as_truncated_json_text(self):
        """A value larger than the registry keeps is stored as the start of its JSON text."""
        outcome = outcome_from_result("p", returned("x" * 70_000), LIMITS)
        assert outcome.result_truncated
        assert outcome.result == '"' + "x" * (64 * 1024 - 1)

    def test_value_json_refuses__failed_unserialisable(self):
        """A value the portal cannot write as JSON (NaN) fails the run, saying why."""
        outcome = outcome_from_result("p", returned({"ratio": float("nan")}), LIMITS)
        assert (outcome.status, outcome.outcome, outcome.error_type) == (
            RunStatus.FAILED,
            "unserialisable",
            "ValueError",
        )
        assert outcome.reason.startswith(
            "Plugin 'p' returned a value that is not JSON-serialisable: Out of range float"
        )

    def test_text_the_registry_cannot_store__replaced_with_a_warning(self):
        """A NUL in the value is replaced before storing, and the run's warnings say so,
        after the sandbox's own warnings."""
        result = returned({"text": "a\x00b"}, warnings=["stdout was cut"])
        outcome = outcome_from_result("p", result, LIMITS)
        assert outcome.result == {"text": "a\ufffdb"}
        assert outcome.warnings[0] == "stdout was cut"
        assert outcome.warnings[1].startswith(
            "Plugin 'p' produced values the registry cannot store as they are; they were "
            "changed before storing: result: "
        )
