"""The arithmetic of retries and quarantine: pure functions, no query, no clock, no randomness
of their own (the caller passes `now` and the jitter draw), so each rule is tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from plugin_contract.policies import DEFAULT_QUARANTINE_AFTER, NO_RETRY, RetryPolicy
from plugins_app.models import RunOutcomeKind, RunStatus

# Outcomes that say nothing about the plugin's own verdict on its input: the process was
# stopped, died, or the portal lost it. A retry can reasonably go differently.
TRANSIENT_OUTCOMES = frozenset(
    {
        RunOutcomeKind.TIMEOUT,
        RunOutcomeKind.CRASHED,
        RunOutcomeKind.MEMORY,
        RunOutcomeKind.INTERRUPTED,
        RunOutcomeKind.SANDBOX_FAILURE,
    }
)
TRANSIENT_STATUSES = frozenset({RunStatus.TIMED_OUT, RunStatus.CRASHED, RunStatus.INTERRUPTED})

QuarantineState = Literal["closed", "open", "half_open"]


def effective_retry(
    declared: Mapping[str, Any] | None, override: Mapping[str, Any] | None
) -> RetryPolicy:
    """The policy in force: an operator's override, else the declared one, else no retry."""
    chosen = override if override is not None else declared
    if chosen is None:
        return dict(NO_RETRY)  # type: ignore[return-value]
    return {**NO_RETRY, **chosen}  # type: ignore[typeddict-item]


def effective_quarantine_after(declared: int | None, override: int | None) -> int:
    """Consecutive failures that quarantine the plugin (0: never)."""
    if override is not None:
        return override
    return DEFAULT_QUARANTINE_AFTER if declared is None else declared


def is_retryable(policy: RetryPolicy, *, outcome: str, status: str) -> bool:
    """Whether a failed run's way of failing is one the policy retries."""
    if status == RunStatus.SUCCEEDED or outcome == RunOutcomeKind.REFUSED:
        return False
    if outcome in TRANSIENT_OUTCOMES or status in TRANSIENT_STATUSES:
        return True
    return outcome == RunOutcomeKind.ERROR and policy["on_error"]


def should_retry(policy: RetryPolicy, *, attempt: int, outcome: str, status: str) -> bool:
    """Whether attempt number `attempt`, failed so, gets another attempt."""
    return attempt < policy["max_attempts"] and is_retryable(policy, outcome=outcome, status=status)


def backoff_s(policy: RetryPolicy, *, attempt: int, jitter: float) -> float:
    """The wait after failed attempt number `attempt` (1 for the first run): backoff_s doubled
    per attempt, capped at max_backoff_s, then scaled by 0.5 + jitter / 2 with `jitter` drawn
    from [0, 1), so retries of many runs that failed together spread out and never wait longer
    than the cap."""
    exponent = min(attempt - 1, 64)  # 2**64 seconds is past any cap already
    base = min(policy["max_backoff_s"], policy["backoff_s"] * 2**exponent)
    return base * (0.5 + min(max(jitter, 0.0), 1.0) / 2)


def next_cooldown_s(previous: float | None, *, first: float, cap: float) -> float:
    """The cooldown of a new quarantine: `first`, or twice the previous one after a failed
    probe, never above `cap`."""
    if previous is None:
        return min(first, cap)
    return min(previous * 2, cap)


def should_quarantine(*, consecutive_failures: int, threshold: int) -> bool:
    return threshold > 0 and consecutive_failures >= threshold


def quarantine_state(*, until: datetime | None, now: datetime) -> QuarantineState:
    """closed: runs go; open: runs are refused; half_open: the cooldown is over and one probe
    run may go (or is going)."""
    if until is None:
        return "closed"
    if now < until:
        return "open"
    return "half_open"


def probe_allowed(*, until: datetime | None, probe_active: bool, now: datetime) -> bool:
    """A run may start now as the quarantine's probe: the cooldown is over, no probe is going."""
    return until is not None and now >= until and not probe_active


def retry_at(now: datetime, delay_s: float) -> datetime:
    return now + timedelta(seconds=delay_s)
