"""Every outcome updates the registry: state, counters, history event and run record, each time.

Two layers: each sandbox Outcome maps (plugins_app.pipeline.outcome_from_result) onto a run
status and an actionable reason, and each run status is written by the services as state,
counters, one event and the run row. Both iterate their enums, so a new value fails here until
its effect on the registry is stated.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from plugins_app import pipeline, reasons, services
from plugins_app.models import (
    EventKind,
    Plugin,
    PluginEvent,
    PluginRun,
    PluginState,
    RunStatus,
)
from sandbox import Limits, Outcome, SandboxResult
from tests.plugins_app.test_reasons import problems_with


@dataclass(frozen=True)
class Expected:
    """What an operator sees after one finished run of a plugin that was INITIALIZED."""

    state: PluginState
    successes: int
    errors: int
    consecutive_failures: int


SUCCESS = Expected(PluginState.INITIALIZED, successes=1, errors=0, consecutive_failures=0)
FAILURE = Expected(PluginState.FAILED, successes=0, errors=1, consecutive_failures=1)
UNCOUNTED = Expected(PluginState.INITIALIZED, successes=0, errors=0, consecutive_failures=0)
# Every way a run can finish; a new RunStatus without an entry here fails the test below.
EXPECTED_BY_STATUS = {
    RunStatus.SUCCEEDED: SUCCESS,
    RunStatus.FAILED: FAILURE,
    RunStatus.TIMED_OUT: FAILURE,
    RunStatus.CRASHED: FAILURE,
    RunStatus.INTERRUPTED: FAILURE,
    RunStatus.CANCELLED: UNCOUNTED,  # stopped by an operator: not a failure of the plugin
}
UNFINISHED = {RunStatus.QUEUED, RunStatus.RUNNING}


def finished_statuses() -> list[RunStatus]:
    return [status for status in RunStatus if status not in UNFINISHED]


def reason_for(status: RunStatus) -> str:
    if status == RunStatus.SUCCEEDED:
        return ""
    return (
        reasons.run_interrupted(plugin="p", run_id=1, worker="worker:1", last_seen=None)
        + f" [{status}]"
    )


def record_outcome(outcome: services.RunOutcome) -> PluginRun:
    """Queue, start and finish one run of plugin 'p' with the given outcome."""
    run = services.run_queue(name="p", params={"page": 1}, actor="api:ann")
    services.run_start(run_id=run.pk, worker="worker:1")
    return services.run_finish(run_id=run.pk, outcome=outcome)


def assert_registry_recorded(
    plugin_before: Plugin, run: PluginRun, outcome: services.RunOutcome, expected: Expected
) -> None:
    """State, counters, the run's closing event and the run row all tell the same story."""
    plugin = Plugin.objects.get(pk=plugin_before.pk)
    assert plugin.state == expected.state
    assert plugin.success_count - plugin_before.success_count == expected.successes
    assert plugin.error_count - plugin_before.error_count == expected.errors
    assert plugin.consecutive_failures == expected.consecutive_failures
    assert plugin.running_count == 0
    state_reason = outcome.reason if expected.state == PluginState.FAILED else ""
    assert plugin.reason == state_reason
    closing = PluginEvent.objects.filter(run=run, kind=EventKind.STATE_CHANGED).first()
    assert closing is not None, "no history event for the run's outcome"
    assert (closing.from_state, closing.to_state) == (PluginState.RUNNING, expected.state)
    assert closing.reason == state_reason
    run.refresh_from_db()
    assert run.status == outcome.status
    assert run.outcome == outcome.outcome
    assert run.reason == outcome.reason
    assert run.finished_at is not None
    assert run.duration_ms == outcome.duration_ms


@pytest.mark.django_db
class TestEveryRunOutcome:
    def test_expectations__cover_every_finished_status(self):
        """A new run status cannot be added without saying what it does to the registry."""
        assert set(EXPECTED_BY_STATUS) == set(finished_statuses())

    @pytest.mark.parametrize("status", finished_statuses(), ids=str)
    def test_outcome__updates_state_counters_event_and_run(self, make_plugin, status):
        """Each finished status writes state, counters, one event and the run row together."""
        plugin = make_plugin("p")
        outcome = services.RunOutcome(
            status=status,
            outcome=str(status),
            reason=reason_for(status),
            duration_ms=12.5,
            exit_code=None if status == RunStatus.SUCCEEDED else -11,
        )
        run = record_outcome(outcome)
        assert_registry_recorded(plugin, run, outcome, EXPECTED_BY_STATUS[status])
        if EXPECTED_BY_STATUS[status].state == PluginState.FAILED:
            assert reasons.is_actionable(Plugin.objects.get(name="p").reason)

    def test_checker__fails_on_a_wrong_record(self, make_plugin):
        """The registry check is not a formality: a failure recorded as a success is caught."""
        plugin = make_plugin("p")
        outcome = services.RunOutcome(
            status=RunStatus.CRASHED, reason=reason_for(RunStatus.CRASHED)
        )
        run = record_outcome(outcome)
        with pytest.raises(AssertionError):
            assert_registry_recorded(plugin, run, outcome, SUCCESS)

    @pytest.mark.parametrize(
        "status", sorted(set(finished_statuses()) - {RunStatus.SUCCEEDED, RunStatus.CANCELLED})
    )
    def test_failure_then_success__recovers(self, make_plugin, status):
        """After any failure kind, a success brings the plugin back and clears the reason."""
        make_plugin("p")
        record_outcome(services.RunOutcome(status=status, reason=reason_for(status)))
        record_outcome(services.RunOutcome(status=RunStatus.SUCCEEDED, duration_ms=1.0))
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.reason, plugin.consecutive_failures) == (
            PluginState.INITIALIZED,
            "",
            0,
        )
        assert (plugin.success_count, plugin.error_count) == (1, 1)


# What each sandbox outcome must become. A failed run is transient: FAILED, never UNAVAILABLE.
STATUS_BY_SANDBOX_OUTCOME = {
    Outcome.OK: RunStatus.SUCCEEDED,
    Outcome.ERROR: RunStatus.FAILED,
    Outcome.TIMEOUT: RunStatus.TIMED_OUT,
    Outcome.MEMORY: RunStatus.CRASHED,
    Outcome.CRASHED: RunStatus.CRASHED,
    Outcome.EXITED: RunStatus.FAILED,
    Outcome.OUTPUT_LIMIT: RunStatus.FAILED,
    Outcome.UNSERIALISABLE: RunStatus.FAILED,
    Outcome.SANDBOX_FAILURE: RunStatus.FAILED,
    Outcome.DISK_LIMIT: RunStatus.FAILED,
    Outcome.CANCELLED: RunStatus.CANCELLED,
}
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/plugins/ocr.py", line 12, in run\n'
    "    raise ValueError('page 3 is blank')\n"
    "ValueError: page 3 is blank\n"
)
# What the sandbox reports for each outcome, as it fills SandboxResult.
SANDBOX_FACTS = {
    Outcome.OK: {"value": {"text": "hello"}},
    Outcome.ERROR: {"error_type": "ValueError", "traceback": TRACEBACK},
    Outcome.TIMEOUT: {"error_type": "Timeout", "signal": "SIGKILL", "exit_code": -9},
    Outcome.MEMORY: {"error_type": "MemoryError", "peak_rss_kb": 1_048_576},
    Outcome.CRASHED: {"error_type": "Crashed", "signal": "SIGSEGV", "exit_code": -11},
    Outcome.EXITED: {"error_type": "SystemExit", "exit_code": 3},
    Outcome.OUTPUT_LIMIT: {"error_type": "OutputLimit"},
    Outcome.UNSERIALISABLE: {"error_type": "PicklingError"},
    Outcome.SANDBOX_FAILURE: {"error_type": "SandboxFailure"},
    Outcome.DISK_LIMIT: {"error_type": "DiskLimit", "signal": "SIGKILL", "disk_used_kb": 262144},
    Outcome.CANCELLED: {"error_type": "Cancelled", "signal": "SIGKILL", "exit_code": -9},
}


def sandbox_result(outcome: Outcome) -> SandboxResult:
    facts = {"value": None, "duration_ms": 42.0, "stderr": "warming up\n", **SANDBOX_FACTS[outcome]}
    ok = outcome == Outcome.OK
    error = None if ok else f"The sandbox reports {outcome.value} for this call in the test"
    return SandboxResult(ok=ok, outcome=outcome, error=error, target="ocr:run", **facts)


@pytest.mark.django_db
class TestEverySandboxOutcome:
    def test_expectations__cover_every_sandbox_outcome(self):
        """A new sandbox Outcome cannot be added without saying what it does to the registry."""
        assert set(STATUS_BY_SANDBOX_OUTCOME) == set(Outcome)
        assert set(SANDBOX_FACTS) == set(Outcome)

    @pytest.mark.parametrize("outcome", list(Outcome), ids=str)
    def test_sandbox_outcome__maps_and_records(self, make_plugin, outcome):
        """Each sandbox outcome becomes the right run status, state, counters, event and row."""
        plugin = make_plugin("p")
        result = sandbox_result(outcome)
        mapped = pipeline.outcome_from_result("p", result, Limits(), plugin_root="/srv/plugins")
        status = STATUS_BY_SANDBOX_OUTCOME[outcome]
        assert (mapped.status, mapped.outcome) == (status, outcome.value)
        assert (mapped.exit_code, mapped.duration_ms) == (result.exit_code, result.duration_ms)
        assert mapped.stderr_tail == result.stderr
        if status == RunStatus.SUCCEEDED:
            assert (mapped.result, mapped.reason) == (result.value, "")
        else:
            assert problems_with(mapped.reason) == [], mapped.reason
            assert "'p'" in mapped.reason, "the reason names the plugin"
        run = record_outcome(mapped)
        assert_registry_recorded(plugin, run, mapped, EXPECTED_BY_STATUS[status])

    def test_ok_with_unstorable_value__recorded_as_failure(self, make_plugin):
        """A value the sandbox returned but JSON cannot store is a failed run, with a reason."""
        plugin = make_plugin("p")
        result = SandboxResult(ok=True, value={1, 2}, outcome=Outcome.OK, duration_ms=3.0)
        mapped = pipeline.outcome_from_result("p", result, Limits())
        assert (mapped.status, mapped.outcome) == (RunStatus.FAILED, Outcome.UNSERIALISABLE.value)
        assert problems_with(mapped.reason) == []
        run = record_outcome(mapped)
        assert_registry_recorded(plugin, run, mapped, FAILURE)
