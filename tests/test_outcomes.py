"""Every outcome updates the registry: state, counters, history event and run record, each time."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from plugins_app import reasons, services
from plugins_app.models import (
    EventKind,
    Plugin,
    PluginEvent,
    PluginRun,
    PluginState,
    RunStatus,
)


@dataclass(frozen=True)
class Expected:
    """What an operator sees after one finished run of a plugin that was INITIALIZED."""

    state: PluginState
    successes: int
    errors: int
    consecutive_failures: int


SUCCESS = Expected(PluginState.INITIALIZED, successes=1, errors=0, consecutive_failures=0)
FAILURE = Expected(PluginState.FAILED, successes=0, errors=1, consecutive_failures=1)
# Every way a run can finish; a new RunStatus without an entry here fails the test below.
EXPECTED_BY_STATUS = {
    RunStatus.SUCCEEDED: SUCCESS,
    RunStatus.FAILED: FAILURE,
    RunStatus.TIMED_OUT: FAILURE,
    RunStatus.CRASHED: FAILURE,
    RunStatus.INTERRUPTED: FAILURE,
}
UNFINISHED = {RunStatus.QUEUED, RunStatus.RUNNING}


def finished_statuses() -> list[RunStatus]:
    return [status for status in RunStatus if status not in UNFINISHED]


def reason_for(status: RunStatus) -> str:
    if status == RunStatus.SUCCEEDED:
        return ""
    return reasons.run_interrupted("p", 1, "worker:1", None) + f" [{status}]"


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
    assert plugin.reason == outcome.reason
    closing = PluginEvent.objects.filter(run=run, kind=EventKind.STATE_CHANGED).first()
    assert closing is not None, "no history event for the run's outcome"
    assert (closing.from_state, closing.to_state) == (PluginState.RUNNING, expected.state)
    assert closing.reason == outcome.reason
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
        if status != RunStatus.SUCCEEDED:
            assert reasons.is_actionable(Plugin.objects.get(name="p").reason)

    @pytest.mark.parametrize("status", sorted(set(finished_statuses()) - {RunStatus.SUCCEEDED}))
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
