"""The reasons of cancelled runs: who stopped the run, and that there is nothing to fix.

Kept beside plugins_app/reasons.py under the same rules (keyword-only arguments, `plugin=`
first, an actionable sentence each); tests/plugins_app/test_reasons.py walks it too.
"""

from __future__ import annotations


def run_cancelled(*, plugin: str, run_id: int, by: str, was_running: bool) -> str:
    what = "its processes were killed" if was_running else "it never started"
    return (
        f"Run {run_id} of plugin '{plugin}' was cancelled by {by or 'an operator'}: {what}, "
        "and it is not counted as a failure of the plugin (queue a new run if its result is "
        "still needed)"
    )


def run_cancelled_in_call(*, plugin: str) -> str:
    return (
        f"The call of plugin '{plugin}' was cancelled while it ran and its processes were "
        "killed; it is not counted as a failure (queue a new run if its result is still needed)"
    )


def cancel_of_finished_run(*, plugin: str, run_id: int, status: str) -> str:
    return (
        f"Run {run_id} of plugin '{plugin}' already finished ({status}), so there is nothing "
        "to cancel (only a queued or running run can be cancelled)"
    )
