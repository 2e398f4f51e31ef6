"""From a sandbox result to a run outcome: every sandbox outcome has its status and reason."""

from __future__ import annotations

import pytest

from plugins_app import reasons
from plugins_app.models import RunStatus
from plugins_app.pipeline import outcome_from_result
from sandbox import Fault, Frame, Limits, Outcome, Phase, SandboxResult

LIMITS = Limits(timeout_s=2, cpu_s=3, memory_mb=256, result_bytes=1000)


def result(outcome: Outcome, **fields) -> SandboxResult:
    fields.setdefault("error", "The sandbox's own sentence about it, for the test")
    value = fields.pop("value", None)
    return SandboxResult(ok=outcome == Outcome.OK, value=value, outcome=outcome, **fields)


class TestStatus:
    @pytest.mark.parametrize(
        ("outcome", "status"),
        [
            (Outcome.TIMEOUT, RunStatus.TIMED_OUT),
            (Outcome.CRASHED, RunStatus.CRASHED),
            (Outcome.MEMORY, RunStatus.CRASHED),
            (Outcome.ERROR, RunStatus.FAILED),
            (Outcome.EXITED, RunStatus.FAILED),
            (Outcome.OUTPUT_LIMIT, RunStatus.FAILED),
            (Outcome.UNSERIALISABLE, RunStatus.FAILED),
            (Outcome.SANDBOX_FAILURE, RunStatus.FAILED),
            (Outcome.DISK_LIMIT, RunStatus.FAILED),
        ],
    )
    def test_each_failure_outcome__has_status_and_actionable_reason(self, outcome, status):
        """Every sandbox failure maps to its run status with an actionable reason."""
        mapped = outcome_from_result("p", result(outcome, error_type="X"), LIMITS)
        assert mapped.status == status
        assert mapped.outcome == outcome.value
        assert reasons.is_actionable(mapped.reason)
        assert "'p'" in mapped.reason

    def test_forensic_fields__copied_and_tails_capped(self):
        """Exit code, signal, peak memory, duration and output tails reach the run."""
        mapped = outcome_from_result(
            "p",
            result(
                Outcome.CRASHED,
                signal="SIGSEGV",
                exit_code=None,
                peak_rss_kb=2048,
                duration_ms=12.5,
                stdout="o" * 10_000,
                stderr="Fatal Python error: Segmentation fault",
                traceback="",
            ),
            LIMITS,
        )
        assert (mapped.signal, mapped.peak_rss_kb, mapped.duration_ms) == ("SIGSEGV", 2048, 12.5)
        assert len(mapped.stdout_tail) == 4000
        assert mapped.stderr_tail == "Fatal Python error: Segmentation fault"


class TestReasons:
    def test_cpu_limit__names_cpu_seconds(self):
        """A CPU-time kill says CPU time and the cpu_s limit, not the wall-clock timeout."""
        mapped = outcome_from_result(
            "p", result(Outcome.TIMEOUT, error_type="CPUTimeLimit", limit="cpu_s"), LIMITS
        )
        assert mapped.reason.startswith("Plugin 'p' used more than 3 s of CPU time")

    def test_disk_limit__names_the_budget_what_was_written_and_what_to_do(self):
        """A call past limits.disk_mb says the budget, how much it wrote and the ways out."""
        mapped = outcome_from_result(
            "p",
            result(Outcome.DISK_LIMIT, error_type="DiskLimit", disk_used_kb=230 * 1024),
            LIMITS.replace(disk_mb=200),
        )
        assert mapped.reason == (
            "Plugin 'p' wrote 230 MB in its working directory, more than its 200 MB disk "
            "budget, and was stopped; its files there were removed (raise limits.disk_mb in "
            "the plugin, write less, or write large output elsewhere and return a reference)"
        )

    def test_output_limit__names_result_bytes(self):
        """A result over result_bytes names the limit."""
        mapped = outcome_from_result("p", result(Outcome.OUTPUT_LIMIT), LIMITS)
        assert "limits.result_bytes (1000 bytes)" in mapped.reason

    def test_exception__message_and_the_plugins_own_line(self):
        """The exception's message (multi-line included) and the plugin's line are quoted."""
        tb = (
            "Traceback (most recent call last):\n"
            '  File "/srv/plugins/p.py", line 7, in run\n'
            "    raise pkg.Oops('first line')\n"
            "pkg.Oops: first line\nsecond line\n"
        )
        raised = result(
            Outcome.ERROR,
            error_type="Oops",
            traceback=tb,
            message="first line\nsecond line",
            frames=[Frame("/srv/plugins/p.py", 7, "run")],
        )
        mapped = outcome_from_result("p", raised, LIMITS, plugin_root="/srv")
        assert mapped.reason == (
            "Plugin 'p' raised Oops in run(): first line second line at "
            "/srv/plugins/p.py:7 in run (see the run's traceback; fix the plugin or its input, "
            "then rerun)"
        )

    def test_load_failure_in_warm_host__says_reload(self):
        """A plugin that cannot be set up for a run says to fix it and reload."""
        tb = "plugin_contract.loader.PluginLoadError: setup() raised OSError: gone\n"
        raised = result(
            Outcome.ERROR,
            error_type="PluginLoadError",
            traceback=tb,
            message="setup() raised OSError: gone",
            fault=Fault.LOAD,
        )
        mapped = outcome_from_result("p", raised, LIMITS)
        assert mapped.reason == (
            "Plugin 'p' could not be imported or set up for this run: setup() raised OSError: "
            "gone (fix it, then reload the plugin)"
        )

    def test_sandbox_failure__quotes_sandbox_sentence(self):
        """A failure of the sandbox itself quotes the sandbox's own explanation."""
        mapped = outcome_from_result("p", result(Outcome.SANDBOX_FAILURE), LIMITS)
        assert "The sandbox's own sentence about it" in mapped.reason


class TestSuccess:
    def test_tuple_result__stored_as_json(self):
        """A successful value is stored as its JSON form."""
        mapped = outcome_from_result("p", result(Outcome.OK, value=(1, "a")), LIMITS)
        assert (mapped.status, mapped.result, mapped.result_truncated) == (
            RunStatus.SUCCEEDED,
            [1, "a"],
            False,
        )


WARM = "the Preload warm-up 'plugin_contract.loader:warm_plugin'"


class TestWarmUpFailures:
    @pytest.mark.parametrize(
        ("outcome", "error_type", "error", "status", "why"),
        [
            (
                Outcome.TIMEOUT,
                "Timeout",
                f"{WARM} did not finish starting within 330 s and was killed (make the warm-up "
                "faster or raise SandboxConfig.warmup_timeout_s)",
                RunStatus.FAILED,
                "did not finish starting within 330 s and was killed",
            ),
            (
                Outcome.ERROR,
                "WarmupExited",
                f"{WARM} ended the sandbox host with exit code 3 before it was ready (fix the "
                "plugin's import/warm-up; the next call retries it once)",
                RunStatus.FAILED,
                "ended the sandbox host with exit code 3 before it was ready",
            ),
            (
                Outcome.CRASHED,
                "SIGSEGV",
                f"{WARM} killed the sandbox host with SIGSEGV (segmentation fault) before it was "
                "ready (fix the plugin's import/warm-up; the next call retries it once)",
                RunStatus.CRASHED,
                "killed the sandbox host with SIGSEGV (segmentation fault) before it was ready",
            ),
        ],
    )
    def test_warm_up_failure__says_setup_failed_not_raise_timeout(
        self, outcome, error_type, error, status, why
    ):
        """A warm host that failed to import/set up says so and why, not 'raise timeout_s'."""
        failure = result(
            outcome,
            error_type=error_type,
            error=f"Plugin call 'x' could not run: {error}",
            phase=Phase.WARM_UP,
            host_failure=why,
        )
        mapped = outcome_from_result("p", failure, LIMITS)
        assert mapped.status == status
        assert mapped.reason == reasons.run_warmup_failed(plugin="p", detail=why)
        assert "timeout_s" not in mapped.reason and "in run()" not in mapped.reason
        assert reasons.is_actionable(mapped.reason)
