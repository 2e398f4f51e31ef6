"""The scheduler's tick: each occurrence acted on once, through the ordinary submit path."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from plugins_app import selectors, services
from plugins_app.models import Plugin, PluginRun, RunStatus
from plugins_app.schedules.firing import fire_due
from plugins_app.schedules.models import FiringOutcome, Schedule, ScheduleFiring

pytestmark = pytest.mark.django_db


def finish(run: PluginRun) -> None:
    """Start and finish a queued run as a worker would, successfully."""
    services.run_start(run_id=run.pk, worker="test:1")
    outcome = services.RunOutcome(status=RunStatus.SUCCEEDED, duration_ms=1.0)
    services.run_finish(run_id=run.pk, outcome=outcome)


class TestFire:
    def test_due_interval__one_run_queued_and_next_run_moved(self, real_plugin, due_schedule):
        """A due schedule queues one run as 'schedule:NAME' and its next run moves a step on."""
        schedule = due_schedule(real_plugin(), params={"size": 3})
        occurrence = schedule.next_run_at
        (firing,) = fire_due()
        assert firing.outcome == FiringOutcome.FIRED
        assert firing.occurrence == occurrence
        run = PluginRun.objects.get()
        assert (run.status, run.params, run.actor) == (
            "queued",
            {"size": 3},
            "schedule:every-minute",
        )
        schedule.refresh_from_db()
        assert schedule.next_run_at == occurrence + timedelta(seconds=60)
        assert (schedule.last_run_id, schedule.last_outcome) == (run.pk, FiringOutcome.FIRED)
        assert fire_due() == []  # the same moment again: nothing is due

    def test_health_record__shows_next_scheduled_run(self, real_plugin, due_schedule):
        """The plugin's health record shows the earliest next run of its enabled schedules."""
        plugin = real_plugin()
        schedule = due_schedule(plugin)
        fire_due()
        schedule.refresh_from_db()
        record = selectors.health_record_by_name(name=plugin.name)
        expected = schedule.next_run_at.isoformat().replace("+00:00", "Z")
        assert record["next_scheduled_at"] == expected

    def test_cron__next_run_on_the_expression(self, real_plugin, due_schedule):
        """A cron schedule's next run is the expression's next time after now (UTC)."""
        schedule = due_schedule(real_plugin(), cron="*/5 * * * *")
        fire_due()
        schedule.refresh_from_db()
        assert schedule.next_run_at > timezone.now()
        assert schedule.next_run_at.minute % 5 == 0 and schedule.next_run_at.second == 0

    def test_firing__unique_per_occurrence(self, real_plugin, due_schedule):
        """The database itself refuses a second firing of the same occurrence."""
        schedule = due_schedule(real_plugin())
        (firing,) = fire_due()
        with pytest.raises(IntegrityError), transaction.atomic():
            ScheduleFiring.objects.create(
                schedule=schedule, occurrence=firing.occurrence, outcome=FiringOutcome.FIRED
            )


class TestRefusals:
    def test_disabled_plugin__refusal_on_schedule_nothing_counted(self, real_plugin, due_schedule):
        """A disabled plugin's occurrence is recorded as refused with why; no run, no count."""
        plugin = real_plugin()
        services.plugin_disable(name=plugin.name, actor="user:op", note="maintenance")
        schedule = due_schedule(plugin)
        (firing,) = fire_due()
        schedule.refresh_from_db()
        assert firing.outcome == schedule.last_outcome == FiringOutcome.REFUSED
        assert "disabled" in schedule.last_note and "maintenance" in schedule.last_note
        assert "next occurrence" in schedule.last_note
        assert not PluginRun.objects.exists()
        plugin = Plugin.objects.get(pk=plugin.pk)
        assert (plugin.error_count, plugin.consecutive_failures) == (0, 0)

    def test_params_run_does_not_take__refused(self, real_plugin, due_schedule):
        """Params that run() does not accept are refused at each occurrence, not counted."""
        run_params = {"accepted": ["name"], "required": [], "var_keyword": False}
        plugin = real_plugin(run_params=run_params)
        schedule = due_schedule(plugin, params={"nme": "Ann"})
        (firing,) = fire_due()
        assert firing.outcome == FiringOutcome.REFUSED
        assert "nme" in firing.note
        assert not PluginRun.objects.exists()
        assert Plugin.objects.get(pk=plugin.pk).error_count == 0
        schedule.refresh_from_db()
        assert schedule.next_run_at > timezone.now()


class TestOverlap:
    def fire_twice(self, plugin, due_schedule, overlap: str) -> tuple[Schedule, ScheduleFiring]:
        schedule = due_schedule(plugin, overlap=overlap)
        fire_due()  # the first run stays queued: the thread executor starts it after commit
        Schedule.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now())
        (second,) = fire_due()
        return schedule, second

    def test_skip__occurrence_skipped_while_run_going(self, real_plugin, due_schedule):
        """With 'skip', an occurrence while the last run is going is skipped, naming the run."""
        _, second = self.fire_twice(real_plugin(), due_schedule, "skip")
        run = PluginRun.objects.get()
        assert second.outcome == FiringOutcome.SKIPPED
        assert f"run {run.pk} was still going" in second.note

    def test_allow__second_run_queued(self, real_plugin, due_schedule):
        """With 'allow', each occurrence queues a run whatever is going."""
        _, second = self.fire_twice(real_plugin(), due_schedule, "allow")
        assert second.outcome == FiringOutcome.FIRED
        assert PluginRun.objects.count() == 2

    def test_queue_one__deferred_then_queued_when_the_run_ends(self, real_plugin, due_schedule):
        """With 'queue one', one occurrence waits for the run; more are skipped meanwhile."""
        schedule, second = self.fire_twice(real_plugin(), due_schedule, "queue_one")
        assert second.outcome == FiringOutcome.DEFERRED
        Schedule.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now())
        (third,) = fire_due()
        assert third.outcome == FiringOutcome.SKIPPED
        assert fire_due() == []  # the first run is still going: the deferred one waits
        finish(PluginRun.objects.get())
        (released,) = fire_due()
        assert (released.pk, released.outcome) == (second.pk, FiringOutcome.FIRED)
        assert PluginRun.objects.filter(status=RunStatus.QUEUED).count() == 1


class TestMissed:
    def test_run_once__one_run_for_all_missed(self, real_plugin, due_schedule):
        """Ten missed minutes with 'run once' queue one run and say how many were missed."""
        schedule = due_schedule(real_plugin(), late_s=600, missed="run_once")
        (firing,) = fire_due()
        assert firing.outcome == FiringOutcome.FIRED
        assert "missed 11 occurrence(s)" in firing.note and "ran once" in firing.note
        assert PluginRun.objects.count() == 1
        schedule.refresh_from_db()
        assert schedule.next_run_at > timezone.now()

    def test_skip__nothing_runs(self, real_plugin, due_schedule):
        """With 'skip', missed occurrences are recorded as missed and nothing runs."""
        due_schedule(real_plugin(), late_s=600, missed="skip")
        (firing,) = fire_due()
        assert firing.outcome == FiringOutcome.MISSED
        assert "skipped them" in firing.note
        assert not PluginRun.objects.exists()

    def test_slightly_late__not_missed(self, real_plugin, due_schedule, settings):
        """An occurrence a little late (within the grace) is an ordinary one."""
        settings.PORTAL_SCHEDULER_GRACE_S = 60
        due_schedule(real_plugin(), late_s=30, missed="skip")
        (firing,) = fire_due()
        assert (firing.outcome, firing.note) == (FiringOutcome.FIRED, "")
