"""The services: transitions, counters and history, written together or not at all."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import services
from plugins_app.errors import IllegalTransition, PluginNotFound, PluginRefused
from plugins_app.models import (
    EventKind,
    Plugin,
    PluginEvent,
    PluginRun,
    PluginState,
    RunStatus,
    SourceKind,
)
from plugins_app.sources import PluginSource
from plugins_app.transitions import ALLOWED_TRANSITIONS, check_transition

pytestmark = pytest.mark.django_db

CONFLICT_REASON = "Plugin name 'ocr' is provided by 2 sources in the test (remove one, reload)"
ACME = PluginSource(
    location="entry point: acme = acme_ocr (acme-ocr 1.0)",
    kind=SourceKind.ENTRY_POINT,
    entry_point_name="acme",
)
ONE_FILE = PluginSource(location="/srv/plugins/ocr.py", kind=SourceKind.FILE)
TWO_FILES = PluginSource(conflicting=("/a/ocr.py", "/b/ocr.py"))


def source_fields(name: str) -> tuple[str, str, str, list[str]]:
    plugin = Plugin.objects.get(name=name)
    return plugin.source, plugin.source_kind, plugin.entry_point_name, plugin.conflicting_sources


def states_of(plugin: Plugin) -> list[tuple[str, str]]:
    events = PluginEvent.objects.filter(plugin=plugin, kind=EventKind.STATE_CHANGED)
    return [(e.from_state, e.to_state) for e in events.order_by("created_at", "id")]


class TestRegister:
    def test_register__new_plugin_is_loaded_with_one_event(self, make_plugin):
        """A newly imported plugin is LOADED, and its first event says so."""
        plugin = make_plugin("ocr", initialized=False, version="1.2")
        assert plugin.state == PluginState.LOADED
        assert plugin.version == "1.2"
        assert states_of(plugin) == [("", "LOADED")]

    def test_mark_initialized__sets_uptime_from_first_availability(self, make_plugin):
        """INITIALIZED keeps the uptime clock that started when the plugin became available."""
        plugin = make_plugin("ocr", initialized=False)
        started = plugin.available_since
        plugin = services.plugin_mark_initialized(name="ocr", actor="test")
        assert plugin.state == PluginState.INITIALIZED
        assert plugin.available_since == started
        assert plugin.uptime_seconds() is not None

    def test_mark_unavailable__new_plugin_has_no_uptime(self):
        """A plugin whose environment check fails is registered UNAVAILABLE with no uptime."""
        plugin = services.plugin_mark_unavailable(
            name="yolo",
            reason="Missing Python module 'torch' required by plugin 'yolo'",
            actor="test",
        )
        assert plugin.state == PluginState.UNAVAILABLE
        assert plugin.uptime_seconds() is None
        assert states_of(plugin) == [("", "UNAVAILABLE")]

    def test_reload_failing_again__records_each_recheck(self, make_plugin):
        """Two failed reloads in a row are both in the history, each with its reason."""
        services.plugin_mark_failed(name="bad", reason="first reason for the test", actor="t")
        services.plugin_mark_failed(name="bad", reason="second reason for the test", actor="t")
        events = PluginEvent.objects.filter(plugin__name="bad").order_by("id")
        assert [e.reason for e in events] == [
            "first reason for the test",
            "second reason for the test",
        ]

    def test_unknown_plugin__raises_not_found(self):
        """Services name the unknown plugin instead of failing obscurely."""
        with pytest.raises(PluginNotFound, match="Plugin 'ghost' not found"):
            services.plugin_mark_initialized(name="ghost", actor="test")


class TestTransitions:
    def test_unavailable_cannot_start_running(self):
        """The table refuses UNAVAILABLE → RUNNING: only a reload leaves UNAVAILABLE."""
        with pytest.raises(IllegalTransition, match="cannot go from UNAVAILABLE to RUNNING"):
            check_transition("x", PluginState.UNAVAILABLE, PluginState.RUNNING)

    def test_illegal_transition__writes_nothing(self, make_plugin):
        """An illegal transition leaves state and history as they were."""
        make_plugin("p")
        services.plugin_mark_unavailable(name="p", reason="gone for the test run", actor="t")
        before = PluginEvent.objects.count()
        with pytest.raises(IllegalTransition):
            services.plugin_mark_initialized(name="p", actor="t")
        assert Plugin.objects.get(name="p").state == PluginState.UNAVAILABLE
        assert PluginEvent.objects.count() == before

    def test_table__covers_every_state(self):
        """Every state has an entry, so no state is a dead end by omission."""
        assert set(ALLOWED_TRANSITIONS) == {None, *PluginState}


class TestRuns:
    def test_success__counts_once_and_returns_to_initialized(self, make_plugin, finish_run):
        """A successful run counts one success and leaves the plugin INITIALIZED."""
        make_plugin("p")
        run = finish_run("p", RunStatus.SUCCEEDED, duration_ms=20.0, result={"ok": 1})
        plugin = Plugin.objects.get(name="p")
        assert run.status == RunStatus.SUCCEEDED
        assert run.result == {"ok": 1}
        assert (plugin.success_count, plugin.error_count) == (1, 0)
        assert plugin.state == PluginState.INITIALIZED
        assert plugin.last_duration_ms == 20.0
        assert states_of(plugin)[-2:] == [("INITIALIZED", "RUNNING"), ("RUNNING", "INITIALIZED")]

    def test_failure__counts_once_and_sets_failed_with_reason(self, make_plugin, finish_run):
        """A failed run counts one error, FAILED carries the run's reason, uptime stops."""
        make_plugin("p")
        finish_run("p", RunStatus.CRASHED, reason="Plugin 'p' crashed with SIGSEGV in the test")
        plugin = Plugin.objects.get(name="p")
        assert (plugin.success_count, plugin.error_count) == (0, 1)
        assert plugin.consecutive_failures == 1
        assert plugin.state == PluginState.FAILED
        assert plugin.reason == "Plugin 'p' crashed with SIGSEGV in the test"
        assert plugin.uptime_seconds() is None

    def test_success_after_failures__recovers_and_resets_streak(self, make_plugin, finish_run):
        """A successful run brings a FAILED plugin back to INITIALIZED and clears its reason."""
        make_plugin("p")
        finish_run("p", RunStatus.FAILED)
        finish_run("p", RunStatus.TIMED_OUT)
        assert Plugin.objects.get(name="p").consecutive_failures == 2
        finish_run("p", RunStatus.SUCCEEDED)
        plugin = Plugin.objects.get(name="p")
        assert plugin.state == PluginState.INITIALIZED
        assert plugin.reason == ""
        assert plugin.consecutive_failures == 0
        assert (plugin.success_count, plugin.error_count) == (1, 2)

    def test_finish_twice__counts_once(self, make_plugin):
        """Finishing a run that already finished changes nothing: no double count."""
        make_plugin("p")
        run = services.run_queue(name="p", params={}, actor="t")
        services.run_start(run_id=run.pk, worker="w")
        failed = services.RunOutcome(status=RunStatus.FAILED, reason="broke in the test run")
        services.run_finish(run_id=run.pk, outcome=failed)
        services.run_finish(run_id=run.pk, outcome=failed)
        assert Plugin.objects.get(name="p").error_count == 1

    def test_concurrent_runs__running_holds_until_last_finishes(self, make_plugin):
        """RUNNING holds while at least one run is in progress; the last one decides."""
        make_plugin("p")
        first = services.run_queue(name="p", params={}, actor="t")
        second = services.run_queue(name="p", params={}, actor="t")
        services.run_start(run_id=first.pk, worker="w")
        services.run_start(run_id=second.pk, worker="w")
        assert Plugin.objects.get(name="p").running_count == 2
        ok = services.RunOutcome(status=RunStatus.SUCCEEDED, duration_ms=1.0)
        services.run_finish(run_id=first.pk, outcome=ok)
        assert Plugin.objects.get(name="p").state == PluginState.RUNNING
        services.run_finish(run_id=second.pk, outcome=ok)
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.running_count, plugin.success_count) == (
            PluginState.INITIALIZED,
            0,
            2,
        )

    def test_average_duration__is_running_mean(self, make_plugin, finish_run):
        """The average duration is the mean of the finished runs' durations."""
        make_plugin("p")
        for duration in (10.0, 20.0, 60.0):
            finish_run("p", duration_ms=duration)
        assert Plugin.objects.get(name="p").avg_duration_ms == pytest.approx(30.0)

    def test_average_duration__ignores_runs_without_duration(self, make_plugin, finish_run):
        """Interrupted runs (no duration) do not drag the average down."""
        make_plugin("p")
        finish_run("p", duration_ms=10.0)
        finish_run("p", RunStatus.INTERRUPTED, duration_ms=None)
        finish_run("p", duration_ms=30.0)
        plugin = Plugin.objects.get(name="p")
        assert (plugin.avg_duration_ms, plugin.timed_run_count) == (pytest.approx(20.0), 2)

    def test_reset_counters__average_starts_over(self, make_plugin, finish_run):
        """After a reset the average is over the runs since the reset only."""
        make_plugin("p")
        finish_run("p", duration_ms=1000.0)
        services.plugin_reset_counters(name="p", note="", actor="user:ann")
        finish_run("p", duration_ms=10.0)
        plugin = Plugin.objects.get(name="p")
        assert (plugin.avg_duration_ms, plugin.timed_run_count) == (pytest.approx(10.0), 1)

    def test_disabled__refused_without_counting(self, make_plugin):
        """A disabled plugin is refused with who disabled it and why; nothing is counted."""
        make_plugin("p")
        services.plugin_disable(name="p", note="maintenance window", actor="user:ann")
        with pytest.raises(PluginRefused, match="disabled by user:ann: maintenance window"):
            services.run_queue(name="p", params={}, actor="t")
        assert PluginRun.objects.count() == 0
        assert Plugin.objects.get(name="p").error_count == 0

    def test_unavailable__refused_with_reason(self):
        """An UNAVAILABLE plugin is refused with its reason and the fix."""
        services.plugin_mark_unavailable(
            name="gpu", reason="Plugin 'gpu' requires a CUDA GPU but none was found", actor="t"
        )
        with pytest.raises(PluginRefused, match="requires a CUDA GPU"):
            services.run_queue(name="gpu", params={}, actor="t")

    def test_disabled_while_queued__run_closed_uncounted(self, make_plugin):
        """A run whose plugin was disabled while it waited is closed, not run, not counted."""
        make_plugin("p")
        run = services.run_queue(name="p", params={}, actor="t")
        services.plugin_disable(name="p", note="", actor="user:ann")
        run = services.run_start(run_id=run.pk, worker="w")
        plugin = Plugin.objects.get(name="p")
        assert run.status == RunStatus.FAILED
        assert "disabled" in run.reason
        assert (plugin.error_count, plugin.running_count) == (0, 0)

    def test_reload_while_running__refused(self, make_plugin):
        """A reload cannot pull a plugin out from under its runs in progress."""
        make_plugin("p")
        run = services.run_queue(name="p", params={}, actor="t")
        services.run_start(run_id=run.pk, worker="w")
        with pytest.raises(IllegalTransition, match="1 run\\(s\\) in progress"):
            services.plugin_register(name="p", metadata=services.PluginMetadata(), actor="t")


class TestRunRefusedAtCallTime:
    REASON = "Environment variable 'X_URL' required by plugin 'p' is not set (set it, then reload)"

    def _started(self, name: str) -> PluginRun:
        run = services.run_queue(name=name, params={}, actor="test")
        return services.run_start(run_id=run.pk, worker="test:1")

    def test_last_run__plugin_unavailable_with_the_reason_nothing_counted(self, make_plugin):
        """A run its process refused leaves the plugin UNAVAILABLE and counts nothing."""
        make_plugin("p")
        run = services.run_refuse_unavailable(run_id=self._started("p").pk, reason=self.REASON)
        plugin = Plugin.objects.get(name="p")
        assert (run.status, run.outcome) == (RunStatus.FAILED, "refused")
        assert run.reason == (
            f"Plugin 'p' is UNAVAILABLE and cannot run: {self.REASON} (fix the environment, "
            "then reload the plugin)"
        )
        assert (plugin.state, plugin.reason) == (PluginState.UNAVAILABLE, self.REASON)
        assert (plugin.success_count, plugin.error_count, plugin.running_count) == (0, 0, 0)
        assert states_of(plugin)[-1] == ("RUNNING", "UNAVAILABLE")

    def test_other_runs_going__stays_running_with_the_reason(self, make_plugin):
        """While another run is in progress the plugin stays RUNNING, showing the reason."""
        make_plugin("p")
        refused, going = self._started("p"), self._started("p")
        services.run_refuse_unavailable(run_id=refused.pk, reason=self.REASON)
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.reason, plugin.running_count) == (
            PluginState.RUNNING,
            self.REASON,
            1,
        )
        assert PluginRun.objects.get(pk=going.pk).status == RunStatus.RUNNING

    def test_run_already_finished__left_as_it_is(self, make_plugin):
        """A run that finished meanwhile (reconciled, say) is not closed or counted again."""
        make_plugin("p")
        run = self._started("p")
        services.run_finish(
            run_id=run.pk, outcome=services.RunOutcome(status=RunStatus.SUCCEEDED, result=1)
        )
        again = services.run_refuse_unavailable(run_id=run.pk, reason=self.REASON)
        assert again.status == RunStatus.SUCCEEDED
        assert Plugin.objects.get(name="p").state == PluginState.INITIALIZED


class TestReconcile:
    def test_stale_heartbeat__interrupted_once(self, make_plugin):
        """A run whose worker died is marked interrupted, counted once, with when and where."""
        make_plugin("p")
        run = services.run_queue(name="p", params={}, actor="t")
        services.run_start(run_id=run.pk, worker="host:4242")
        PluginRun.objects.filter(pk=run.pk).update(
            heartbeat_at=timezone.now() - timedelta(minutes=5)
        )
        done = services.runs_reconcile_interrupted(stale_after=timedelta(seconds=60))
        again = services.runs_reconcile_interrupted(stale_after=timedelta(seconds=60))
        plugin = Plugin.objects.get(name="p")
        assert [r.status for r in done] == [RunStatus.INTERRUPTED]
        assert again == []
        assert plugin.error_count == 1
        assert plugin.state == PluginState.FAILED
        assert "interrupted" in plugin.reason and "host:4242" in plugin.reason

    def test_fresh_heartbeat__left_running(self, make_plugin):
        """A run with a fresh heartbeat is not touched."""
        make_plugin("p")
        run = services.run_queue(name="p", params={}, actor="t")
        services.run_start(run_id=run.pk, worker="host:1")
        assert services.runs_reconcile_interrupted(stale_after=timedelta(seconds=60)) == []
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.RUNNING

    def test_heartbeat_arriving_during_sweep__run_left_to_its_worker(
        self, make_plugin, monkeypatch
    ):
        """A late heartbeat landing after the sweep picked the run keeps it RUNNING, uncounted."""
        from plugins_app import reasons

        make_plugin("p")
        run = services.run_queue(name="p", params={}, actor="t")
        services.run_start(run_id=run.pk, worker="host:1")
        PluginRun.objects.filter(pk=run.pk).update(
            heartbeat_at=timezone.now() - timedelta(minutes=5)
        )
        real = reasons.run_interrupted

        def beat_then_word(*args, **kwargs):
            services.run_heartbeat(run_ids=[run.pk])  # the live worker beats just now
            return real(*args, **kwargs)

        monkeypatch.setattr(reasons, "run_interrupted", beat_then_word)
        assert services.runs_reconcile_interrupted(stale_after=timedelta(seconds=60)) == []
        assert PluginRun.objects.get(pk=run.pk).status == RunStatus.RUNNING
        assert Plugin.objects.get(name="p").error_count == 0

    def test_finish_as_stale__skipped_when_heartbeat_is_newer(self, make_plugin):
        """run_finish(stale_as_of=...) re-checks the heartbeat under the row lock."""
        make_plugin("p")
        run = services.run_queue(name="p", params={}, actor="t")
        services.run_start(run_id=run.pk, worker="host:1")
        outcome = services.RunOutcome(status=RunStatus.INTERRUPTED, reason="x" * 40)
        kept = services.run_finish(run_id=run.pk, outcome=outcome, stale_as_of=timezone.now())
        assert kept.status == RunStatus.RUNNING
        assert Plugin.objects.get(name="p").running_count == 1


class TestOperatorActions:
    def test_disable_enable__recorded_with_actor(self, make_plugin):
        """Disable and enable are events with who did it and why."""
        make_plugin("p")
        services.plugin_disable(name="p", note="noisy", actor="user:ann")
        services.plugin_enable(name="p", note="fixed", actor="user:bob")
        kinds = list(
            PluginEvent.objects.filter(plugin__name="p")
            .exclude(kind=EventKind.STATE_CHANGED)
            .order_by("id")
            .values_list("kind", "actor", "reason")
        )
        assert kinds == [("disabled", "user:ann", "noisy"), ("enabled", "user:bob", "fixed")]
        assert Plugin.objects.get(name="p").enabled

    def test_disable_enable__sets_then_clears_who_when_why(self, make_plugin):
        """Disabling records who, when and why on the plugin; enabling clears all three."""
        make_plugin("p")
        disabled = services.plugin_disable(name="p", note="noisy", actor="user:ann")
        assert (disabled.enabled, disabled.disabled_by, disabled.disabled_note) == (
            False,
            "user:ann",
            "noisy",
        )
        assert disabled.disabled_at is not None
        enabled = services.plugin_enable(name="p", note="fixed", actor="user:bob")
        assert (enabled.enabled, enabled.disabled_by, enabled.disabled_note) == (True, "", "")
        assert enabled.disabled_at is None

    def test_reset_counters__zeroes_and_records_previous_values(self, make_plugin, finish_run):
        """Reset zeroes the counters and the event keeps what they were."""
        make_plugin("p")
        finish_run("p")
        finish_run("p", RunStatus.FAILED)
        services.plugin_reset_counters(name="p", note="after fix", actor="user:ann")
        plugin = Plugin.objects.get(name="p")
        assert (plugin.success_count, plugin.error_count, plugin.consecutive_failures) == (0, 0, 0)
        event = PluginEvent.objects.get(kind=EventKind.COUNTERS_RESET)
        assert event.reason.startswith("Counters reset from 1 successes, 1 errors")


class TestPluginSource:
    def test_register__records_location_kind_and_entry_point(self):
        """A registered plugin's source, its kind and its entry point's name are stored apart."""
        metadata = services.PluginMetadata(source=ACME)
        services.plugin_register(name="pretty", metadata=metadata, actor="t")
        assert source_fields("pretty") == (ACME.location, "entry_point", "acme", [])

    def test_conflict__records_every_source_and_no_single_one(self, make_plugin):
        """A name conflict stores each source in the list, and no single source or kind."""
        make_plugin("ocr")
        services.plugin_mark_unavailable(
            name="ocr", reason=CONFLICT_REASON, actor="t", source=TWO_FILES
        )
        assert source_fields("ocr") == ("", "", "", ["/a/ocr.py", "/b/ocr.py"])

    def test_one_source_again__ends_the_conflict(self):
        """Registering from one source after a conflict empties the conflicting sources."""
        services.plugin_mark_unavailable(
            name="ocr", reason=CONFLICT_REASON, actor="t", source=TWO_FILES
        )
        metadata = services.PluginMetadata(source=ONE_FILE)
        services.plugin_register(name="ocr", metadata=metadata, actor="t")
        assert source_fields("ocr") == ("/srv/plugins/ocr.py", "file", "", [])

    def test_failed_with_source_only__metadata_kept(self):
        """A failed load that names only its source updates the source fields, nothing else."""
        metadata = services.PluginMetadata(source=ONE_FILE, version="2.0")
        services.plugin_register(name="ocr", metadata=metadata, actor="t")
        package = PluginSource(location="/srv/plugins/ocr", kind=SourceKind.PACKAGE)
        plugin = services.plugin_mark_failed(
            name="ocr", reason="SyntaxError in the test on purpose", actor="t", source=package
        )
        assert plugin.version == "2.0"
        assert source_fields("ocr") == ("/srv/plugins/ocr", "package", "", [])

    def test_mark_without_source__recorded_source_kept(self, make_plugin):
        """A mark that names no source (a vanished plugin) leaves the source fields alone."""
        make_plugin("ocr")
        services.plugin_mark_unavailable(name="ocr", reason="gone for the test run", actor="t")
        assert source_fields("ocr") == ("/plugins/ocr.py", "file", "", [])
