"""Services of retries and quarantine: each transition in one transaction, with its event."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import services
from plugins_app.errors import IllegalTransition, InvalidPolicy, NotQuarantined, PluginRefused
from plugins_app.models import EventKind, Plugin, PluginEvent, PluginRun, RunOutcomeKind, RunStatus

pytestmark = pytest.mark.django_db

RETRY = {"max_attempts": 3, "backoff_s": 4, "max_backoff_s": 60}
CRASH = {"status": RunStatus.CRASHED, "outcome": RunOutcomeKind.CRASHED}
RAISED = {"status": RunStatus.FAILED, "outcome": RunOutcomeKind.ERROR}


def crash(run_id: int, **fields) -> PluginRun:
    """Start a queued run (its backoff over) and finish it crashed (or as `fields` say)."""
    PluginRun.objects.filter(pk=run_id).update(not_before=None)
    services.run_start(run_id=run_id, worker="test:1")
    outcome = services.RunOutcome(
        **{**CRASH, "reason": "Run of the plugin crashed in the test on purpose", **fields}
    )
    return services.run_finish(run_id=run_id, outcome=outcome)


def first_run(name: str) -> PluginRun:
    return services.run_queue(name=name, params={"n": 1}, actor="api:ann")


def retries_of(run: PluginRun) -> list[PluginRun]:
    return list(PluginRun.objects.filter(retry_of=run).order_by("attempt"))


def events(name: str, kind: EventKind) -> list[PluginEvent]:
    return list(PluginEvent.objects.filter(plugin__name=name, kind=kind).order_by("id"))


class TestRetries:
    def test_crash__queues_next_attempt_linked_and_held_back(self, make_plugin):
        """A crashed run gets attempt 2: same params and actor, linked, not before its backoff."""
        make_plugin("ocr", retry=RETRY)
        before = timezone.now()
        run = crash(first_run("ocr").pk)
        [retry] = retries_of(run)
        assert (retry.status, retry.attempt, retry.params, retry.actor) == (
            RunStatus.QUEUED,
            2,
            {"n": 1},
            "api:ann",
        )
        assert before + timedelta(seconds=2) <= retry.not_before
        assert retry.not_before <= timezone.now() + timedelta(seconds=4)
        [scheduled] = events("ocr", EventKind.RETRY_SCHEDULED)
        assert scheduled.run_id == retry.pk and "attempt 2 of 3" in scheduled.reason
        assert Plugin.objects.get(name="ocr").error_count == 1  # the attempt counted, once

    def test_attempts__all_link_to_first_and_stop_at_max(self, make_plugin):
        """Attempts 2 and 3 both name the first run; a failed attempt 3 queues nothing."""
        make_plugin("ocr", retry=RETRY)
        first = crash(first_run("ocr").pk)
        second = crash(retries_of(first)[0].pk)
        third = crash(retries_of(first)[1].pk)
        assert [r.attempt for r in retries_of(first)] == [2, 3]
        assert PluginRun.objects.filter(retry_of=second).count() == 0
        assert third.attempt == 3
        assert PluginRun.objects.filter(status=RunStatus.QUEUED).count() == 0
        plugin = Plugin.objects.get(name="ocr")
        assert (plugin.error_count, plugin.consecutive_failures) == (3, 3)

    def test_plugin_error__retried_only_with_on_error(self, make_plugin):
        """An exception the plugin raised is not retried unless the policy says on_error."""
        make_plugin("strict", retry=RETRY)
        make_plugin("lenient", retry={**RETRY, "on_error": True})
        assert retries_of(crash(first_run("strict").pk, **RAISED)) == []
        assert len(retries_of(crash(first_run("lenient").pk, **RAISED))) == 1

    def test_no_policy__no_retry(self, make_plugin):
        """A plugin that declares no retry is never retried."""
        make_plugin("plain")
        assert retries_of(crash(first_run("plain").pk)) == []

    def test_retry__not_started_before_its_backoff(self, make_plugin):
        """run_start refuses a retry whose backoff is not over and leaves it queued."""
        make_plugin("ocr", retry=RETRY)
        [retry] = retries_of(crash(first_run("ocr").pk))
        with pytest.raises(IllegalTransition, match="waiting for its backoff"):
            services.run_start(run_id=retry.pk, worker="test:1")
        assert PluginRun.objects.get(pk=retry.pk).status == RunStatus.QUEUED

    def test_retry_of_plugin_disabled_meanwhile__refused_uncounted(self, make_plugin):
        """A due retry of a plugin disabled since is closed refused, nothing counted."""
        make_plugin("ocr", retry=RETRY)
        [retry] = retries_of(crash(first_run("ocr").pk))
        services.plugin_disable(name="ocr", note="maintenance", actor="user:ann")
        PluginRun.objects.filter(pk=retry.pk).update(not_before=timezone.now())
        started = services.run_start(run_id=retry.pk, worker="test:1")
        assert (started.status, started.outcome) == (RunStatus.FAILED, RunOutcomeKind.REFUSED)
        assert Plugin.objects.get(name="ocr").error_count == 1

    def test_interrupted_run__retried_by_the_reconciler(self, make_plugin):
        """A run whose worker died is finished INTERRUPTED and its next attempt queued."""
        make_plugin("ocr", retry=RETRY)
        run = first_run("ocr")
        services.run_start(run_id=run.pk, worker="dead:1")
        later = timezone.now() + timedelta(hours=1)
        services.runs_reconcile_interrupted(stale_after=timedelta(0), now=later)
        [retry] = retries_of(run)
        assert retry.status == RunStatus.QUEUED and retry.attempt == 2

    @pytest.mark.parametrize(("second_way", "poison"), [("interrupted", True), ("crashed", False)])
    def test_last_attempt_interrupted__reason_names_a_poison_run_only_after_all_were(
        self, make_plugin, second_way, poison
    ):
        """The last attempt interrupted after only interruptions says the plugin likely takes
        its worker down; after a crash among them, it is an ordinary interruption."""
        make_plugin("ocr", retry=RETRY)
        first = run = first_run("ocr")
        for attempt, way in enumerate(["interrupted", second_way, "interrupted"], start=1):
            if way == "crashed":
                crash(run.pk)
            else:
                PluginRun.objects.filter(pk=run.pk).update(not_before=None)
                services.run_start(run_id=run.pk, worker=f"node-{attempt} (host:1)")
                later = timezone.now() + timedelta(hours=attempt)
                services.runs_reconcile_interrupted(stale_after=timedelta(0), now=later)
            if attempt < 3:
                run = retries_of(first)[-1]
        ocr = Plugin.objects.get(name="ocr")
        assert run.attempt == 3 and not PluginRun.objects.filter(attempt=4).exists()
        assert ("attempt 3 of 3, as was every earlier" in ocr.reason) is poison, ocr.reason
        assert "node-3 (host:1)" in ocr.reason


def quarantine_now(name: str, failures: int = 2) -> Plugin:
    for _ in range(failures):
        crash(first_run(name).pk)
    return Plugin.objects.get(name=name)


def cooldown_over(name: str) -> None:
    Plugin.objects.filter(name=name).update(quarantined_until=timezone.now() - timedelta(seconds=1))


class TestQuarantine:
    def test_threshold__quarantines_with_reason_and_event(self, make_plugin, settings):
        """The failure that reaches quarantine_after opens the breaker: reason, until, event."""
        settings.PORTAL_QUARANTINE_COOLDOWN_S = 60
        make_plugin("ocr", quarantine_after=2)
        crash(first_run("ocr").pk)
        assert Plugin.objects.get(name="ocr").quarantined_until is None
        before = timezone.now()
        plugin = quarantine_now("ocr", failures=1)
        assert plugin.quarantined_until >= before + timedelta(seconds=60)
        assert plugin.quarantine_cooldown_s == 60
        assert "quarantined after 2 consecutive failures" in plugin.quarantine_reason
        assert "crashed in the test on purpose" in plugin.quarantine_reason
        assert [e.reason for e in events("ocr", EventKind.QUARANTINED)] == [
            plugin.quarantine_reason
        ]

    def test_quarantined__runs_refused_and_not_counted(self, make_plugin):
        """While quarantined, a run is refused: no run row, no counter moves."""
        make_plugin("ocr", quarantine_after=2)
        plugin = quarantine_now("ocr")
        runs = PluginRun.objects.count()
        with pytest.raises(PluginRefused, match="quarantined"):
            first_run("ocr")
        after = Plugin.objects.get(name="ocr")
        assert PluginRun.objects.count() == runs
        assert (after.error_count, after.consecutive_failures) == (
            plugin.error_count,
            plugin.consecutive_failures,
        )

    def test_failure_that_quarantines__is_not_retried(self, make_plugin):
        """The breaker opening takes over from the retry policy: no attempt is queued."""
        make_plugin("ocr", quarantine_after=1, retry=RETRY)
        assert retries_of(crash(first_run("ocr").pk)) == []

    def test_zero__never_quarantines(self, make_plugin):
        """quarantine_after = 0 turns the breaker off."""
        make_plugin("ocr", quarantine_after=0)
        assert quarantine_now("ocr", failures=7).quarantined_until is None

    def test_default__five_failures(self, make_plugin):
        """Without a declaration the breaker opens at the fifth failure in a row."""
        make_plugin("ocr")
        assert quarantine_now("ocr", failures=4).quarantined_until is None
        assert quarantine_now("ocr", failures=1).quarantined_until is not None

    def test_after_cooldown__one_probe_then_others_refused(self, make_plugin):
        """Half-open: the next run starts as the probe (event); another waits refused."""
        make_plugin("ocr", quarantine_after=2)
        quarantine_now("ocr")
        cooldown_over("ocr")
        probe = first_run("ocr")
        services.run_start(run_id=probe.pk, worker="test:1")
        assert Plugin.objects.get(name="ocr").quarantine_probe_run_id == probe.pk
        [event] = events("ocr", EventKind.QUARANTINE_PROBE)
        assert event.run_id == probe.pk
        with pytest.raises(PluginRefused, match=f"run {probe.pk} is its probe"):
            first_run("ocr")

    def test_probe_success__lifts(self, make_plugin):
        """A successful probe closes the breaker, with an event naming it."""
        make_plugin("ocr", quarantine_after=2)
        quarantine_now("ocr")
        cooldown_over("ocr")
        probe = first_run("ocr")
        services.run_start(run_id=probe.pk, worker="test:1")
        services.run_finish(
            run_id=probe.pk, outcome=services.RunOutcome(status=RunStatus.SUCCEEDED)
        )
        plugin = Plugin.objects.get(name="ocr")
        assert (plugin.quarantined_until, plugin.quarantine_reason) == (None, "")
        [lifted] = events("ocr", EventKind.QUARANTINE_LIFTED)
        assert lifted.run_id == probe.pk and "probe run" in lifted.reason
        first_run("ocr")  # accepted again

    def test_probe_failure__doubles_cooldown_up_to_cap(self, make_plugin, settings):
        """Each failed probe reopens the breaker for twice as long, never above the cap."""
        settings.PORTAL_QUARANTINE_COOLDOWN_S = 10
        settings.PORTAL_QUARANTINE_MAX_COOLDOWN_S = 30
        make_plugin("ocr", quarantine_after=2)
        cooldowns = [quarantine_now("ocr").quarantine_cooldown_s]
        for _ in range(3):
            cooldown_over("ocr")
            crash(first_run("ocr").pk)
            cooldowns.append(Plugin.objects.get(name="ocr").quarantine_cooldown_s)
        assert cooldowns == [10, 20, 30, 30]
        assert len(events("ocr", EventKind.QUARANTINED)) == 4


class TestOperatorServices:
    def test_lift__runs_accepted_with_event(self, make_plugin):
        """An operator's lift closes the breaker and records who and why."""
        make_plugin("ocr", quarantine_after=2)
        quarantine_now("ocr")
        services.quarantine_lift(name="ocr", note="upstream fixed", actor="user:ann")
        [lifted] = events("ocr", EventKind.QUARANTINE_LIFTED)
        assert lifted.actor == "user:ann" and "upstream fixed" in lifted.reason
        first_run("ocr")

    def test_extend__by_cooldown_from_its_end(self, make_plugin, settings):
        """Extending adds the current cooldown to the end (or a given number of seconds)."""
        settings.PORTAL_QUARANTINE_COOLDOWN_S = 100
        make_plugin("ocr", quarantine_after=2)
        until = quarantine_now("ocr").quarantined_until
        plugin = services.quarantine_extend(name="ocr", note="", actor="user:ann")
        assert plugin.quarantined_until == until + timedelta(seconds=100)
        plugin = services.quarantine_extend(name="ocr", note="", actor="user:ann", seconds=5)
        assert plugin.quarantined_until == until + timedelta(seconds=105)
        assert len(events("ocr", EventKind.QUARANTINE_EXTENDED)) == 2

    def test_lift_or_extend_unquarantined__refused(self, make_plugin):
        """There is nothing to lift or extend on a plugin that is not quarantined."""
        make_plugin("ocr")
        with pytest.raises(NotQuarantined, match="not quarantined"):
            services.quarantine_lift(name="ocr", note="", actor="user:ann")
        with pytest.raises(NotQuarantined):
            services.quarantine_extend(name="ocr", note="", actor="user:ann")

    def test_set_policy__override_used_and_recorded(self, make_plugin):
        """An override replaces the declared policy for the next failures; None restores it."""
        make_plugin("ocr", retry=RETRY, quarantine_after=9)
        services.plugin_set_policy(
            name="ocr",
            retry={"max_attempts": 1},
            quarantine_after=1,
            note="stop hammering it",
            actor="user:ann",
        )
        run = crash(first_run("ocr").pk)
        assert retries_of(run) == []
        assert Plugin.objects.get(name="ocr").quarantined_until is not None
        [changed] = events("ocr", EventKind.POLICY_CHANGED)
        assert "off (1 attempt)" in changed.reason and "stop hammering it" in changed.reason
        plugin = services.plugin_set_policy(
            name="ocr", retry=None, quarantine_after=None, note="", actor="user:ann"
        )
        assert (plugin.retry_override, plugin.quarantine_after_override) == (None, None)

    def test_set_policy__invalid_refused_unchanged(self, make_plugin):
        """A policy the contract refuses changes nothing and says what to fix."""
        make_plugin("ocr")
        with pytest.raises(InvalidPolicy, match="max_attempts"):
            services.plugin_set_policy(
                name="ocr", retry={"max_attempts": 0}, quarantine_after=None, note="", actor="a"
            )
        assert Plugin.objects.get(name="ocr").retry_override is None
        assert events("ocr", EventKind.POLICY_CHANGED) == []
