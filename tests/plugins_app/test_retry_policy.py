"""The arithmetic of retries and quarantine, and the contract's checks of a declared policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from plugin_contract.policies import (
    NO_RETRY,
    normalised_retry,
    quarantine_after_problem,
    retry_problem,
)
from plugins_app.models import RunOutcomeKind, RunStatus
from plugins_app.retry_policy import (
    backoff_s,
    effective_quarantine_after,
    effective_retry,
    is_retryable,
    next_cooldown_s,
    probe_allowed,
    quarantine_state,
    should_quarantine,
    should_retry,
)

POLICY = normalised_retry({"max_attempts": 3, "backoff_s": 5, "max_backoff_s": 600})
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class TestBackoff:
    @pytest.mark.parametrize(("attempt", "base"), [(1, 5.0), (2, 10.0), (3, 20.0), (8, 600.0)])
    def test_doubles_per_attempt_up_to_the_cap(self, attempt, base):
        """backoff_s doubles per failed attempt and stops at max_backoff_s (jitter at its top)."""
        assert backoff_s(POLICY, attempt=attempt, jitter=1.0) == base

    def test_jitter__between_half_and_whole(self):
        """Jitter scales the wait into [half, whole]: never zero, never above the cap."""
        assert backoff_s(POLICY, attempt=1, jitter=0.0) == 2.5
        assert backoff_s(POLICY, attempt=1, jitter=0.5) == 3.75
        assert backoff_s(POLICY, attempt=50, jitter=0.999) <= 600.0

    def test_huge_attempt__no_overflow(self):
        """A very late attempt still waits the cap (no float overflow)."""
        policy = normalised_retry({"max_attempts": 100, "backoff_s": 1, "max_backoff_s": 60})
        assert backoff_s(policy, attempt=10_000, jitter=1.0) == 60.0


class TestWhatIsRetried:
    @pytest.mark.parametrize(
        ("outcome", "status"),
        [
            (RunOutcomeKind.TIMEOUT, RunStatus.TIMED_OUT),
            (RunOutcomeKind.CRASHED, RunStatus.CRASHED),
            (RunOutcomeKind.MEMORY, RunStatus.CRASHED),
            (RunOutcomeKind.INTERRUPTED, RunStatus.INTERRUPTED),
            (RunOutcomeKind.SANDBOX_FAILURE, RunStatus.FAILED),
        ],
    )
    def test_transient_outcomes__retried(self, outcome, status):
        """Timeouts, crashes, memory, interruptions and sandbox failures are retried."""
        assert is_retryable(POLICY, outcome=outcome, status=status)

    def test_plugin_error__retried_only_when_policy_says_so(self):
        """An exception raised by the plugin is its own verdict unless on_error is set."""
        assert not is_retryable(POLICY, outcome=RunOutcomeKind.ERROR, status=RunStatus.FAILED)
        on_error = {**POLICY, "on_error": True}
        assert is_retryable(on_error, outcome=RunOutcomeKind.ERROR, status=RunStatus.FAILED)

    @pytest.mark.parametrize(
        ("outcome", "status"),
        [
            (RunOutcomeKind.OK, RunStatus.SUCCEEDED),
            (RunOutcomeKind.REFUSED, RunStatus.FAILED),
            (RunOutcomeKind.EXITED, RunStatus.FAILED),
            (RunOutcomeKind.INVALID_DECLARATION, RunStatus.FAILED),
        ],
    )
    def test_success_refusal_and_plugin_verdicts__not_retried(self, outcome, status):
        """Successes, refusals and failures the plugin chose are never retried."""
        on_error = {**POLICY, "on_error": True}
        assert not is_retryable(on_error, outcome=outcome, status=status)

    def test_attempts__stop_at_max_attempts(self):
        """Attempt 2 of 3 gets a retry; attempt 3 of 3 does not; no policy retries nothing."""
        crash = {"outcome": RunOutcomeKind.CRASHED, "status": RunStatus.CRASHED}
        assert should_retry(POLICY, attempt=2, **crash)
        assert not should_retry(POLICY, attempt=3, **crash)
        assert not should_retry(effective_retry(None, None), attempt=1, **crash)


class TestEffectivePolicy:
    def test_override__wins_over_declared(self):
        """The operator's override is used instead of the declaration; neither: no retry."""
        declared = dict(POLICY)
        override = normalised_retry({"max_attempts": 7})
        assert effective_retry(declared, override)["max_attempts"] == 7
        assert effective_retry(declared, None) == POLICY
        assert effective_retry(None, None) == NO_RETRY

    def test_quarantine_after__override_then_declared_then_default(self):
        """The threshold: override (0 included), else declared, else 5."""
        assert effective_quarantine_after(None, None) == 5
        assert effective_quarantine_after(3, None) == 3
        assert effective_quarantine_after(3, 0) == 0


class TestQuarantineArithmetic:
    def test_cooldown__doubles_up_to_the_cap(self):
        """The first cooldown, then doubled per failed probe, capped."""
        assert next_cooldown_s(None, first=60, cap=300) == 60
        assert next_cooldown_s(60, first=60, cap=300) == 120
        assert next_cooldown_s(240, first=60, cap=300) == 300
        assert next_cooldown_s(None, first=600, cap=300) == 300

    def test_threshold__zero_turns_it_off(self):
        """Quarantine at the threshold, never with 0."""
        assert should_quarantine(consecutive_failures=5, threshold=5)
        assert not should_quarantine(consecutive_failures=4, threshold=5)
        assert not should_quarantine(consecutive_failures=100, threshold=0)

    def test_states__closed_open_half_open(self):
        """Not quarantined, cooling down, and after the cooldown."""
        later = NOW + timedelta(seconds=30)
        assert quarantine_state(until=None, now=NOW) == "closed"
        assert quarantine_state(until=later, now=NOW) == "open"
        assert quarantine_state(until=NOW, now=later) == "half_open"

    def test_probe__one_after_the_cooldown(self):
        """A probe may start once the cooldown is over and no other probe is going."""
        later = NOW + timedelta(seconds=30)
        assert not probe_allowed(until=later, probe_active=False, now=NOW)
        assert probe_allowed(until=NOW, probe_active=False, now=later)
        assert not probe_allowed(until=NOW, probe_active=True, now=later)
        assert not probe_allowed(until=None, probe_active=False, now=NOW)


class TestDeclaredPolicyChecks:
    @pytest.mark.parametrize(
        ("retry", "words"),
        [
            ([3], "must be a dict"),
            ({"attempts": 3}, "unknown key(s) attempts"),
            ({"max_attempts": 0}, "from 1 (no retry)"),
            ({"max_attempts": 2.5}, "whole number"),
            ({"max_attempts": True}, "whole number"),
            ({"backoff_s": -1}, "above 0"),
            ({"backoff_s": float("nan")}, "above 0"),
            ({"backoff_s": 10, "max_backoff_s": 5}, "at least retry['backoff_s']"),
            ({"on_error": "yes"}, "True or False"),
        ],
    )
    def test_bad_retry__says_what_to_fix(self, retry, words):
        """Each malformed retry declaration is refused with what is wrong."""
        problem = retry_problem(retry)
        assert problem is not None and words in problem

    def test_good_retry__normalised_with_defaults(self):
        """A partial declaration gets the defaults; a large backoff lifts the default cap."""
        assert retry_problem({"max_attempts": 3}) is None
        assert normalised_retry({"max_attempts": 3}) == {**NO_RETRY, "max_attempts": 3}
        assert normalised_retry({"backoff_s": 900})["max_backoff_s"] == 900.0

    @pytest.mark.parametrize("value", [-1, 2.0, "5", True, None])
    def test_bad_quarantine_after__refused(self, value):
        """quarantine_after is a whole number from 0."""
        assert "quarantine_after must be a whole number" in str(quarantine_after_problem(value))
        assert quarantine_after_problem(0) is None
