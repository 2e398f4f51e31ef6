"""The reasons of schedules: why an occurrence did not run as planned, and what to do next.

Kept beside plugins_app/reasons.py (the other builders) under the same rules: keyword-only
arguments, `plugin=` first, an actionable sentence each (tests/plugins_app/test_reasons.py walks
this module too).
"""

from __future__ import annotations

from datetime import datetime


def schedule_refused(*, plugin: str, schedule: str, refusal: str) -> str:
    return (
        f"Schedule '{schedule}' of plugin '{plugin}' could not queue its run, nothing was "
        f"counted: {refusal} (the schedule tries again at its next occurrence)"
    )


def schedule_overlap_skipped(*, plugin: str, schedule: str, run_id: int) -> str:
    return (
        f"Schedule '{schedule}' of plugin '{plugin}' skipped an occurrence: its run {run_id} "
        "was still going (set the schedule's overlap policy to 'queue one' or 'allow' to run "
        "anyway, or make the runs shorter than the interval)"
    )


def schedule_deferred(*, plugin: str, schedule: str, run_id: int) -> str:
    return (
        f"Schedule '{schedule}' of plugin '{plugin}' queued this occurrence for when its run "
        f"{run_id} ends (overlap policy 'queue one'; nothing to do unless that run hangs)"
    )


def schedule_missed(*, plugin: str, schedule: str, missed: int, since: datetime, ran: bool) -> str:
    first = since.strftime("%Y-%m-%d %H:%M:%S UTC")
    done = "ran once for them" if ran else "skipped them (missed-runs policy 'skip')"
    return (
        f"Schedule '{schedule}' of plugin '{plugin}' missed {missed} occurrence(s) since "
        f"{first} while no scheduler was running and {done} (keep the web process with "
        "PORTAL_SCHEDULER=thread or a `manage.py runscheduler` running)"
    )


def schedule_disabled(*, plugin: str, schedule: str) -> str:
    return (
        f"Schedule '{schedule}' of plugin '{plugin}' was disabled while an occurrence waited "
        "for the last run to end, so it did not run (enable the schedule to run it again)"
    )


# --- Worker nodes (the celery executor) ----------------------------------------------------
