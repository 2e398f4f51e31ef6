"""Upgrading starts the cumulative run tallies from the finished runs still stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.apps.registry import Apps

from tests.migration_support import migrate_to, migrated_back_to

BEFORE = ("plugins_app", "0006_plugin_source_fields")
AFTER = ("plugins_app", "0007_run_tallies")

# (status, outcome, duration_ms) of the runs stored before the upgrade.
OLD_RUNS = [
    ("succeeded", "ok", 5.0),
    ("succeeded", "ok", 700.0),
    ("failed", "error", 40.0),
    ("failed", "error", None),
    ("timed_out", "timeout", 400_000.0),
    ("interrupted", "interrupted", None),
    ("failed", "", 10.0),  # stored before outcomes were recorded
    ("failed", "refused", None),  # never ran: not counted
    ("queued", "", None),  # not finished: not counted
    ("running", "", None),
]


@pytest.fixture
def at_0006() -> Iterator[Apps]:
    """The schema before the tallies, with every migration applied again afterwards."""
    with migrated_back_to(BEFORE) as apps:
        yield apps


@pytest.mark.django_db(transaction=True)
class TestRunTalliesMigration:
    def test_forward__tallies_counted_from_stored_runs(self, at_0006):
        """Each finished, counted run is in its outcome's tally and its duration's buckets."""
        plugin = at_0006.get_model("plugins_app", "Plugin").objects.create(name="ocr")
        old_run = at_0006.get_model("plugins_app", "PluginRun")
        for status, outcome, duration_ms in OLD_RUNS:
            old_run.objects.create(
                plugin=plugin, status=status, outcome=outcome, duration_ms=duration_ms
            )
        tally = migrate_to(AFTER).get_model("plugins_app", "RunTally")
        columns = ("runs", "timed_runs", "le_10ms", "le_1s", "le_300s")
        rows = {
            row["outcome"]: (*(row[column] for column in columns), round(row["duration_s"], 3))
            for row in tally.objects.filter(plugin_id=plugin.pk).values()
        }
        assert rows == {
            "ok": (2, 2, 1, 2, 2, 0.705),
            "error": (2, 1, 0, 1, 1, 0.04),
            "timeout": (1, 1, 0, 0, 0, 400.0),
            "interrupted": (1, 0, 0, 0, 0, 0.0),
            "failed": (1, 1, 1, 1, 1, 0.01),
        }
