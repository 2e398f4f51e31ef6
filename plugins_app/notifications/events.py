"""The event kinds a webhook can receive, and which state change is which event.

EVENT_KINDS is a registry: a feature that raises events of its own adds its kind with
register_event_kind() and calls outbox.record_event() in its transaction, as the quarantine
does (services/quarantine.py).
"""

from __future__ import annotations

from plugins_app.models import PluginState

FAILED = "failed"
UNAVAILABLE = "unavailable"
RECOVERED = "recovered"
QUARANTINED = "quarantined"

EVENT_KINDS: dict[str, str] = {
    FAILED: "the plugin became FAILED",
    UNAVAILABLE: "the plugin became UNAVAILABLE",
    RECOVERED: "the plugin is INITIALIZED again after being FAILED or UNAVAILABLE",
    QUARANTINED: "the plugin was quarantined after its failures in a row (runs refused)",
}

# States a plugin settles in; LOADED and RUNNING are on the way to one of them.
SETTLED_STATES = (PluginState.INITIALIZED, PluginState.FAILED, PluginState.UNAVAILABLE)


def register_event_kind(kind: str, description: str) -> None:
    EVENT_KINDS.setdefault(kind, description)


def event_for_change(*, previous: str | None, current: str) -> str | None:
    """The event of a plugin settling in `current` after `previous` (its last settled state,
    None for a new plugin): a failing plugin's next failures are no new event."""
    if current == PluginState.FAILED and previous != PluginState.FAILED:
        return FAILED
    if current == PluginState.UNAVAILABLE and previous != PluginState.UNAVAILABLE:
        return UNAVAILABLE
    if current == PluginState.INITIALIZED and previous in (
        PluginState.FAILED,
        PluginState.UNAVAILABLE,
    ):
        return RECOVERED
    return None
