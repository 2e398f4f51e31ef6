"""The retry policy and quarantine threshold a plugin may declare, checked the same way on both
sides: by the plugin-side loader (a bad declaration fails the load) and by the portal (the
load report it reads, an operator's override in the admin).

Standard library only and import-light, like the rest of plugin_contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

DEFAULT_QUARANTINE_AFTER = 5  # consecutive failures that quarantine a plugin; 0 turns it off
MAX_ATTEMPTS_LIMIT = 100  # more attempts than this is a typo, not a policy
MAX_BACKOFF_LIMIT_S = 7 * 24 * 3600  # a week, like the longest run timeout


class RetryPolicy(TypedDict):
    """How a failed run is attempted again (each attempt is its own run)."""

    max_attempts: int  # attempts in all, the first run included: 1 means no retry
    backoff_s: float  # the wait before the second attempt; doubled for each one after it
    max_backoff_s: float  # the longest wait between two attempts
    on_error: bool  # also retry runs whose plugin raised an exception (its own verdict)


NO_RETRY: RetryPolicy = {
    "max_attempts": 1,
    "backoff_s": 5.0,
    "max_backoff_s": 600.0,
    "on_error": False,
}
RETRY_KEYS = tuple(NO_RETRY)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def retry_problem(retry: Any) -> str | None:
    """What is wrong with a declared `retry`, in words that say how to fix it; None if fine."""
    if not isinstance(retry, Mapping):
        return (
            'retry must be a dict such as {"max_attempts": 3, "backoff_s": 5, '
            f'"max_backoff_s": 600}}, not {type(retry).__name__}'
        )
    unknown = sorted(str(key) for key in retry if key not in RETRY_KEYS)
    if unknown:
        return f"retry has unknown key(s) {', '.join(unknown)} (known: {', '.join(RETRY_KEYS)})"
    attempts = retry.get("max_attempts", NO_RETRY["max_attempts"])
    if not isinstance(attempts, int) or isinstance(attempts, bool):
        return f"retry['max_attempts'] must be a whole number, not {attempts!r}"
    if not 1 <= attempts <= MAX_ATTEMPTS_LIMIT:
        return (
            f"retry['max_attempts'] must be from 1 (no retry) to {MAX_ATTEMPTS_LIMIT}, "
            f"not {attempts}"
        )
    for key in ("backoff_s", "max_backoff_s"):
        value = retry.get(key, NO_RETRY[key])
        if not _number(value) or not 0 < value <= MAX_BACKOFF_LIMIT_S:
            return (
                f"retry['{key}'] must be a number of seconds above 0 and at most "
                f"{MAX_BACKOFF_LIMIT_S} (a week), not {value!r}"
            )
    backoff = retry.get("backoff_s", NO_RETRY["backoff_s"])
    longest = retry.get("max_backoff_s", max(backoff, NO_RETRY["max_backoff_s"]))
    if longest < backoff:
        return f"retry['max_backoff_s'] ({longest}) must be at least retry['backoff_s'] ({backoff})"
    on_error = retry.get("on_error", False)
    if not isinstance(on_error, bool):
        return f"retry['on_error'] must be True or False, not {on_error!r}"
    return None


def normalised_retry(retry: Mapping[str, Any]) -> RetryPolicy:
    """A checked `retry` with every key filled in (call retry_problem first)."""
    backoff = float(retry.get("backoff_s", NO_RETRY["backoff_s"]))
    return {
        "max_attempts": int(retry.get("max_attempts", NO_RETRY["max_attempts"])),
        "backoff_s": backoff,
        "max_backoff_s": float(retry.get("max_backoff_s", max(backoff, NO_RETRY["max_backoff_s"]))),
        "on_error": bool(retry.get("on_error", False)),
    }


def quarantine_after_problem(value: Any) -> str | None:
    """What is wrong with a declared `quarantine_after`; None if fine."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1_000_000:
        return (
            "quarantine_after must be a whole number of consecutive failures "
            f"(0 turns automatic quarantine off), not {value!r}"
        )
    return None


__all__ = [
    "DEFAULT_QUARANTINE_AFTER",
    "NO_RETRY",
    "RETRY_KEYS",
    "RetryPolicy",
    "normalised_retry",
    "quarantine_after_problem",
    "retry_problem",
]
