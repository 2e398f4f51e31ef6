"""Services the pipeline added: metadata on broken loads, and pruning old runs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from plugins_app import services
from plugins_app.models import Plugin, PluginEvent, PluginRun, RunStatus, SourceKind
from plugins_app.sources import PluginSource

pytestmark = pytest.mark.django_db


class TestBrokenLoadMetadata:
    def test_mark_unavailable_with_metadata__records_declarations(self):
        """An UNAVAILABLE plugin keeps what it declared, so the admin can show what it needs."""
        source = PluginSource(location="/p/tracker.py", kind=SourceKind.FILE)
        meta = services.PluginMetadata(
            source=source, version="2", requirements={"gpu": True}, limits={"cpu_s": 5}
        )
        plugin = services.plugin_mark_unavailable(
            name="tracker", reason="no GPU found in the test on purpose", actor="t", metadata=meta
        )
        assert (plugin.source, plugin.version, plugin.requirements, plugin.limits) == (
            "/p/tracker.py",
            "2",
            {"gpu": True},
            {"cpu_s": 5},
        )

    def test_mark_failed_without_metadata__keeps_previous_declarations(self, make_plugin):
        """A failed reload without declarations leaves the last known ones in place."""
        make_plugin("ocr", version="1.0", requirements={"modules": ["PIL"]})
        source = PluginSource(location="/p/ocr.py", kind=SourceKind.FILE)
        plugin = services.plugin_mark_failed(
            name="ocr", reason="SyntaxError in the test on purpose", actor="t", source=source
        )
        assert (plugin.version, plugin.requirements, plugin.source) == (
            "1.0",
            {"modules": ["PIL"]},
            "/p/ocr.py",
        )


class TestRunsPrune:
    def _age(self, run: PluginRun, days: float) -> None:
        PluginRun.objects.filter(pk=run.pk).update(
            finished_at=timezone.now() - timedelta(days=days)
        )

    def test_prune__deletes_old_finished_runs_and_keeps_counters(self, make_plugin, finish_run):
        """Old finished runs go; recent ones, counters and events stay."""
        make_plugin("ocr")
        old_ok = finish_run("ocr")
        old_failed = finish_run("ocr", RunStatus.FAILED)
        recent = finish_run("ocr")
        self._age(old_ok, 40)
        self._age(old_failed, 31)
        events = PluginEvent.objects.count()
        deleted = services.runs_prune(older_than=timedelta(days=30), batch_size=1)
        assert deleted == 2
        assert list(PluginRun.objects.values_list("pk", flat=True)) == [recent.pk]
        plugin = Plugin.objects.get(name="ocr")
        assert (plugin.success_count, plugin.error_count) == (2, 1)
        assert PluginEvent.objects.count() == events

    def test_prune__never_touches_queued_or_running_runs(self, make_plugin):
        """Runs still queued or running are kept however old they are."""
        make_plugin("ocr")
        queued = services.run_queue(name="ocr", params={}, actor="t")
        running = services.run_queue(name="ocr", params={}, actor="t")
        services.run_start(run_id=running.pk, worker="w:1")
        old = timezone.now() - timedelta(days=400)
        PluginRun.objects.update(queued_at=old, started_at=old, heartbeat_at=old)
        assert services.runs_prune(older_than=timedelta(days=1)) == 0
        assert PluginRun.objects.count() == 2
        assert {queued.pk, running.pk} == set(PluginRun.objects.values_list("pk", flat=True))
