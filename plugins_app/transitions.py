"""The one table of allowed state transitions (documented in docs/state-machine.md).

`None` stands for "not registered yet". A transition to the same state is listed where it is a
real re-check (a reload that fails again records its new reason) or a concurrent run.
"""

from __future__ import annotations

from plugins_app.errors import IllegalTransition
from plugins_app.models import PluginState

S = PluginState

ALLOWED_TRANSITIONS: dict[PluginState | None, frozenset[PluginState]] = {
    # Discovery: the first load ends in one of these.
    None: frozenset({S.LOADED, S.FAILED, S.UNAVAILABLE}),
    # Imported: setup() succeeds, fails, or the environment check fails.
    S.LOADED: frozenset({S.INITIALIZED, S.FAILED, S.UNAVAILABLE, S.LOADED, S.RUNNING}),
    # Ready: a run starts, or a reload re-checks it.
    S.INITIALIZED: frozenset({S.RUNNING, S.LOADED, S.FAILED, S.UNAVAILABLE}),
    # In use: the last run to finish decides; another concurrent run keeps it RUNNING. A run
    # refused by its own process's environment check (a variable unset there) is UNAVAILABLE.
    S.RUNNING: frozenset({S.RUNNING, S.INITIALIZED, S.FAILED, S.UNAVAILABLE}),
    # Transient: a rerun may fix it, and so may a reload.
    S.FAILED: frozenset({S.RUNNING, S.LOADED, S.FAILED, S.UNAVAILABLE}),
    # Permanent until the environment changes: only a reload leaves it.
    S.UNAVAILABLE: frozenset({S.LOADED, S.FAILED, S.UNAVAILABLE}),
}


def check_transition(name: str, from_state: str | None, to_state: str) -> None:
    """Raise IllegalTransition unless the table allows from_state → to_state."""
    current = PluginState(from_state) if from_state else None
    if PluginState(to_state) in ALLOWED_TRANSITIONS[current]:
        return
    allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current])) or "none"
    raise IllegalTransition(
        f"Plugin '{name}' cannot go from {from_state or 'unregistered'} to {to_state} "
        f"(allowed from {from_state or 'unregistered'}: {allowed}); "
        "see docs/state-machine.md for the transition table"
    )
