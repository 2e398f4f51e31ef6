"""Every reason the portal writes is built here, from its parts: what failed, why, what next.

One sentence each, so the admin, the API and the commands show the same words, and a test
can walk every builder and reject vague ones.
"""

from __future__ import annotations

from datetime import datetime

# Words that say nothing on their own; a reason made only of these is rejected by the tests.
VAGUE_REASONS = frozenset({"error", "failed", "failure", "unknown", "crash", "crashed", "none"})


def plugin_disabled(name: str, by: str, note: str) -> str:
    why = f": {note}" if note else ""
    return (
        f"Plugin '{name}' is disabled by {by or 'an operator'}{why} "
        "(enable it in the admin or through the API to run it again)"
    )


def plugin_unavailable_refusal(name: str, reason: str) -> str:
    return (
        f"Plugin '{name}' is UNAVAILABLE and cannot run: {reason or 'its environment check failed'}"
        " (fix the environment, then reload the plugin)"
    )


def reload_while_running(name: str, running: int) -> str:
    return (
        f"Plugin '{name}' has {running} run(s) in progress and cannot be reloaded now "
        "(wait for them to finish, then reload)"
    )


def run_interrupted(name: str, run_id: int, worker: str, last_seen: datetime | None) -> str:
    seen = last_seen.strftime("%Y-%m-%d %H:%M:%S UTC") if last_seen else "an unknown time"
    return (
        f"Run {run_id} of plugin '{name}' was interrupted: the process running it "
        f"({worker or 'unknown worker'}) stopped responding, last seen at {seen} "
        "(the server or worker was killed or restarted; rerun the plugin)"
    )


def counters_reset(successes: int, errors: int, consecutive: int, note: str) -> str:
    why = f": {note}" if note else ""
    return (
        f"Counters reset from {successes} successes, {errors} errors, "
        f"{consecutive} consecutive failures{why} "
        "(run history is kept; the counters start again from zero)"
    )


def is_actionable(reason: str) -> bool:
    """A reason is actionable when it is a sentence, not a bare word, and names a next step."""
    text = reason.strip()
    if len(text) < 30 or text.lower().strip(".!") in VAGUE_REASONS:
        return False
    return len(text.split()) >= 6
