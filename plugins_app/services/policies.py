"""Operator services of retries and quarantine: override the retry policy and the quarantine
threshold, lift or extend a quarantine. Each is one transaction with its event."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from plugin_contract.policies import normalised_retry, quarantine_after_problem, retry_problem
from plugins_app import reasons_policy
from plugins_app.errors import InvalidPolicy, NotQuarantined
from plugins_app.models import EventKind, Plugin, PluginEvent
from plugins_app.services import quarantine
from plugins_app.services.rows import locked_plugin


@transaction.atomic
def plugin_set_policy(
    *,
    name: str,
    retry: dict[str, Any] | None,
    quarantine_after: int | None,
    note: str,
    actor: str,
) -> Plugin:
    """Override the plugin's retry policy and quarantine threshold (None: back to what the
    plugin declares); InvalidPolicy, with what to fix, for values the contract refuses."""
    problem = (retry is not None and retry_problem(retry)) or (
        quarantine_after is not None and quarantine_after_problem(quarantine_after)
    )
    if problem:
        raise InvalidPolicy(f"Invalid policy for plugin '{name}': {problem}")
    plugin = locked_plugin(name)
    override = None if retry is None else dict(normalised_retry(retry))
    now = timezone.now()
    Plugin.objects.filter(pk=plugin.pk).update(
        retry_override=override, quarantine_after_override=quarantine_after, updated_at=now
    )
    plugin.refresh_from_db()
    retry_words = "as declared" if override is None else _retry_words(override)
    after_words = (
        "as declared"
        if quarantine_after is None
        else "off"
        if quarantine_after == 0
        else f"after {quarantine_after} consecutive failures"
    )
    PluginEvent.objects.create(
        plugin=plugin,
        kind=EventKind.POLICY_CHANGED,
        reason=reasons_policy.policy_changed(
            plugin=name, retry=retry_words, quarantine_after=after_words, note=note
        ),
        actor=actor,
        created_at=now,
    )
    return plugin


def _retry_words(policy: dict[str, Any]) -> str:
    if policy["max_attempts"] == 1:
        return "off (1 attempt)"
    errors = ", errors raised by the plugin too" if policy["on_error"] else ""
    return (
        f"up to {policy['max_attempts']} attempts, backoff {policy['backoff_s']:g} s doubling "
        f"up to {policy['max_backoff_s']:g} s{errors}"
    )


@transaction.atomic
def quarantine_lift(*, name: str, note: str, actor: str) -> Plugin:
    """An operator closes the breaker: runs are accepted again at once."""
    plugin = _quarantined(name)
    reason = reasons_policy.quarantine_lifted(plugin=name, by=actor, note=note)
    quarantine.lift(plugin, actor=actor, reason=reason, now=timezone.now())
    return plugin


@transaction.atomic
def quarantine_extend(*, name: str, note: str, actor: str, seconds: float | None = None) -> Plugin:
    """An operator keeps the breaker open longer: `seconds` more from now or from its end,
    whichever is later (by default the quarantine's current cooldown)."""
    plugin = _quarantined(name)
    now = timezone.now()
    more = seconds if seconds is not None else plugin.quarantine_cooldown_s or 0.0
    if more <= 0:
        raise InvalidPolicy(
            f"Cannot extend the quarantine of plugin '{name}' by {more:g} s (give a positive "
            "number of seconds)"
        )
    until = max(now, plugin.quarantined_until or now) + timedelta(seconds=more)
    reason = reasons_policy.quarantine_extended(plugin=name, by=actor, until=until, note=note)
    quarantine.extend(plugin, until=until, actor=actor, reason=reason, now=now)
    return plugin


def _quarantined(name: str) -> Plugin:
    plugin = locked_plugin(name)
    if plugin.quarantined_until is None:
        raise NotQuarantined(reasons_policy.not_quarantined(plugin=name))
    return plugin
