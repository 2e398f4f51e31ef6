"""Cumulative run counts and the duration histogram, kept in the database (`RunTally`).

/metrics publishes them as Prometheus counters and a histogram. They live in the database, not in
process memory, so every server process, command and worker adds to the same totals, a restart
loses nothing, and every process that scrapes reads the same numbers. They are only ever
incremented, in the transaction that finishes the run, so an operator's counter reset or the
pruning of old runs never makes a series go down.
"""

from __future__ import annotations

from typing import Any

from django.db.models import F

from plugins_app.models import DURATION_BUCKETS, RunOutcomeKind, RunTally


def outcome_label(*, succeeded: bool, outcome: str, status: str) -> str:
    """'ok' for a success; a failure's outcome, or its status when its kind is unknown.

    A failure whose outcome reads 'ok' succeeded in the sandbox but could not be stored: it is
    counted as a failure, under its status.
    """
    if succeeded:
        return RunOutcomeKind.OK.value
    if outcome and outcome != RunOutcomeKind.OK:
        return outcome
    return str(status)


def tally_finished_run(*, plugin_id: int, label: str, duration_ms: float | None) -> None:
    """Count one finished run under its outcome label, its duration in the histogram.

    Call it inside the transaction that finishes the run, with the plugin row locked
    (services.run_finish): writers of one plugin's tallies take turns, so the first run of an
    outcome creates its row without a race.
    """
    changes: dict[str, Any] = {"runs": F("runs") + 1}
    if duration_ms is not None:
        seconds = duration_ms / 1000
        changes.update(timed_runs=F("timed_runs") + 1, duration_s=F("duration_s") + seconds)
        changes.update(
            {column: F(column) + 1 for column, bound in DURATION_BUCKETS if seconds <= bound}
        )
    tally = RunTally.objects.filter(plugin_id=plugin_id, outcome=label)
    if not tally.update(**changes):
        RunTally.objects.create(plugin_id=plugin_id, outcome=label)
        tally.update(**changes)
