"""Upgrading marks the FAILED plugins whose failure came from a load, not from a run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.apps.registry import Apps

from tests.migration_support import migrate_to, migrated_back_to

BEFORE = ("plugins_app", "0007_run_tallies")
AFTER = ("plugins_app", "0008_plugin_load_failure")


@pytest.fixture
def at_0007() -> Iterator[Apps]:
    """The schema before the load failure fields, with every migration applied again after."""
    with migrated_back_to(BEFORE) as apps:
        yield apps


@pytest.mark.django_db(transaction=True)
class TestLoadFailureMigration:
    def test_forward__failed_by_a_load_marked_failed_by_a_run_not(self, at_0007):
        """A FAILED plugin whose last change has no run failed in a load; one a run failed,
        or one that is not FAILED, is left unmarked."""
        plugin = at_0007.get_model("plugins_app", "Plugin")
        event = at_0007.get_model("plugins_app", "PluginEvent")
        run = at_0007.get_model("plugins_app", "PluginRun")
        loaded = plugin.objects.create(name="broken", state="FAILED")
        event.objects.create(plugin=loaded, from_state="", to_state="FAILED")
        ran = plugin.objects.create(name="flaky", state="FAILED")
        failed_run = run.objects.create(plugin=ran, status="failed")
        event.objects.create(plugin=ran, from_state="RUNNING", to_state="FAILED", run=failed_run)
        ready = plugin.objects.create(name="ok", state="INITIALIZED")
        event.objects.create(plugin=ready, from_state="LOADED", to_state="INITIALIZED")
        new = migrate_to(AFTER).get_model("plugins_app", "Plugin")
        assert dict(new.objects.values_list("name", "load_failed")) == {
            "broken": True,
            "flaky": False,
            "ok": False,
        }
