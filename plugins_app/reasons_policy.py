"""The reasons of retries and quarantine: what happened, why, what to do next.

Kept beside plugins_app/reasons.py (the other builders) under the same rules: keyword-only
arguments, `plugin=` first, an actionable sentence each (tests/plugins_app/test_reasons.py walks
both modules).
"""

from __future__ import annotations

from datetime import datetime


def _utc(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def retry_scheduled(*, plugin: str, run_id: int, attempt: int, attempts: int, at: datetime) -> str:
    return (
        f"Run {run_id} of plugin '{plugin}' failed in a way its retry policy retries: attempt "
        f"{attempt} of {attempts} is queued to start at {_utc(at)} (nothing to do unless it "
        "fails too; its reason will say why)"
    )


def plugin_quarantined(
    *, plugin: str, failures: int, last_failure: str, until: datetime, cooldown_s: float
) -> str:
    last = f" (the latest: {last_failure.rstrip('.')})" if last_failure else ""
    return (
        f"Plugin '{plugin}' is quarantined after {failures} consecutive failures{last}: runs are "
        f"refused until {_utc(until)} ({cooldown_s:g} s), then one probe run is let through and "
        "its success lifts the quarantine (fix what its latest failed run names, or lift the "
        "quarantine in the admin)"
    )


def quarantine_probe_busy(*, plugin: str, run_id: int) -> str:
    return (
        f"Plugin '{plugin}' is quarantined and run {run_id} is its probe: other runs are refused "
        "until the probe ends (wait for it; its success lifts the quarantine)"
    )


def quarantine_probe_started(*, plugin: str, run_id: int) -> str:
    return (
        f"Plugin '{plugin}': the quarantine's cooldown is over and run {run_id} is let through "
        "as its probe (its success lifts the quarantine; a failure doubles the cooldown)"
    )


def rerun_while_quarantined(*, plugin: str, until: datetime) -> str:
    return (
        f"Plugin '{plugin}' is quarantined until {_utc(until)}, or while its probe run goes, "
        "so a rerun would be refused (see Retries and quarantine below; lift the quarantine to "
        "run it now)"
    )


def quarantine_lifted(*, plugin: str, by: str, note: str) -> str:
    why = f": {note}" if note else ""
    return (
        f"Quarantine of plugin '{plugin}' lifted by {by}{why} (runs are accepted again; one more "
        "failure quarantines it again while its consecutive failures stay at the threshold)"
    )


def quarantine_extended(*, plugin: str, by: str, until: datetime, note: str) -> str:
    why = f": {note}" if note else ""
    return (
        f"Quarantine of plugin '{plugin}' extended by {by} until {_utc(until)}{why} "
        "(runs stay refused until then; lift it in the admin once the cause is fixed)"
    )


def not_quarantined(*, plugin: str) -> str:
    return (
        f"Plugin '{plugin}' is not quarantined, so there is no quarantine to lift or extend "
        "(its page shows its quarantine status)"
    )


def policy_changed(*, plugin: str, retry: str, quarantine_after: str, note: str) -> str:
    why = f": {note}" if note else ""
    return (
        f"Retry and quarantine policy of plugin '{plugin}' set to retry {retry}, quarantine "
        f"{quarantine_after}{why} (it applies to runs that end from now on; clear the override "
        "to go back to what the plugin declares)"
    )


def run_interrupted_every_attempt(
    *,
    plugin: str,
    run_id: int,
    attempt: int,
    attempts: int,
    worker: str,
    last_seen: datetime | None,
) -> str:
    seen = _utc(last_seen) if last_seen else "an unknown time"
    return (
        f"Run {run_id} of plugin '{plugin}' was interrupted on attempt {attempt} of {attempts}, "
        f"as was every earlier attempt: each time the process running it stopped responding "
        f"(the last: {worker or 'unknown worker'}, last seen at {seen}), so the plugin likely "
        "takes its worker down and no attempt follows (read that node's log and fix the plugin "
        "before you rerun it)"
    )


def load_took_node_down(*, plugin: str, attempts: int, queue: str) -> str:
    return (
        f"Loading plugin '{plugin}' was tried {attempts} times on queue '{queue}' and each time "
        "the worker node loading it stopped before it answered, so the plugin likely takes its "
        "worker down while it imports or sets up, and no node loads it again (read those nodes' "
        "logs and fix the plugin, then reload it)"
    )
