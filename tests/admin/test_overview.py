"""The fleet overview selectors behind the admin index: counts, problems and runs per hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from plugins_app import selectors, services
from plugins_app.admin import display as admin_display
from plugins_app.models import PluginRun, PluginState, RunStatus

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 14, 25, tzinfo=UTC)


def broken_fleet(make_plugin, finish_run):
    """One plugin in every state, plus a disabled one."""
    make_plugin("loaded", initialized=False)
    make_plugin("ready")
    make_plugin("busy")
    services.run_start(
        run_id=services.run_queue(name="busy", params={}, actor="t").pk, worker="w:1"
    )
    make_plugin("flaky")
    finish_run("flaky", RunStatus.FAILED, reason="Plugin 'flaky' raised ValueError in run()")
    services.plugin_mark_unavailable(
        name="yolo",
        reason="Missing Python module 'torch' required by plugin 'yolo' (pip install torch)",
        actor="t",
    )
    make_plugin("off")
    services.plugin_disable(name="off", note="maintenance window", actor="user:ops")


def queue_at(plugin_name: str, when: datetime, status: RunStatus) -> None:
    """A history row at a chosen time (the services stamp the current time)."""
    plugin_run = services.run_queue(name=plugin_name, params={}, actor="t")
    PluginRun.objects.filter(pk=plugin_run.pk).update(queued_at=when, status=status)


class TestFleetOverview:
    def test_fleet_overview__counts_every_state_and_disabled(self, make_plugin, finish_run):
        """Counts per state cover every state (zeros included), and disabled plugins count apart."""
        broken_fleet(make_plugin, finish_run)
        overview = selectors.fleet_overview()
        assert overview.by_state == {
            "LOADED": 1,
            "INITIALIZED": 2,
            "RUNNING": 1,
            "FAILED": 1,
            "UNAVAILABLE": 1,
        }
        assert overview.total == 6
        assert overview.disabled == 1

    def test_fleet_overview__lists_failing_and_unavailable_with_reasons(
        self, make_plugin, finish_run
    ):
        """The problem list names each FAILED and UNAVAILABLE plugin with its reason."""
        broken_fleet(make_plugin, finish_run)
        overview = selectors.fleet_overview()
        problems = {p.name: (p.state, p.reason) for p in overview.problems}
        assert problems == {
            "flaky": (PluginState.FAILED, "Plugin 'flaky' raised ValueError in run()"),
            "yolo": (
                PluginState.UNAVAILABLE,
                "Missing Python module 'torch' required by plugin 'yolo' (pip install torch)",
            ),
        }
        assert overview.problem_count == 2

    def test_fleet_overview__caps_the_problem_list_but_counts_all(self):
        """With many broken plugins the list is capped; the count still tells the whole truth."""
        for i in range(5):
            reason = f"reason {i} for the test"
            services.plugin_mark_failed(name=f"bad-{i}", reason=reason, actor="t")
        overview = selectors.fleet_overview(problem_limit=3)
        assert len(overview.problems) == 3
        assert overview.problem_count == 5

    def test_fleet_overview__empty_fleet(self):
        """An empty registry gives zeros, not an error."""
        overview = selectors.fleet_overview()
        assert overview.total == 0
        assert set(overview.by_state.values()) == {0}
        assert overview.problems == []


class TestRunsPerHour:
    def test_runs_per_hour__buckets_by_hour_with_failures(self, make_plugin):
        """Runs land in their hour's bucket; failed, timed out and crashed runs count as failed."""
        make_plugin("ocr")
        queue_at("ocr", NOW - timedelta(minutes=5), RunStatus.SUCCEEDED)
        queue_at("ocr", NOW - timedelta(minutes=20), RunStatus.FAILED)
        queue_at("ocr", NOW - timedelta(hours=2, minutes=50), RunStatus.CRASHED)
        queue_at("ocr", NOW - timedelta(hours=2, minutes=30), RunStatus.TIMED_OUT)
        queue_at("ocr", NOW - timedelta(hours=2, minutes=40), RunStatus.SUCCEEDED)
        buckets = selectors.runs_per_hour(hours=24, now=NOW)
        assert len(buckets) == 24
        assert buckets[-1].start == datetime(2026, 3, 10, 14, tzinfo=UTC)
        assert buckets[0].start == datetime(2026, 3, 9, 15, tzinfo=UTC)
        by_hour = {b.start.hour: (b.total, b.failed) for b in buckets if b.total}
        assert by_hour == {14: (2, 1), 11: (3, 2)}

    def test_runs_per_hour__ignores_runs_outside_the_window(self, make_plugin):
        """A run older than the window, or in the future, is not counted."""
        make_plugin("ocr")
        queue_at("ocr", NOW - timedelta(hours=24, minutes=30), RunStatus.SUCCEEDED)
        queue_at("ocr", NOW + timedelta(hours=2), RunStatus.SUCCEEDED)
        queue_at("ocr", NOW - timedelta(hours=23, minutes=10), RunStatus.SUCCEEDED)
        buckets = selectors.runs_per_hour(hours=24, now=NOW)
        assert sum(b.total for b in buckets) == 1
        assert buckets[0].total == 1

    def test_runs_per_hour__is_one_query(self, make_plugin):
        """The chart costs one aggregate query, however many hours it shows."""
        make_plugin("ocr")
        with CaptureQueriesContext(connection) as queries:
            selectors.runs_per_hour(hours=24, now=NOW)
        assert len(queries) == 1


class TestHourlyChart:
    def test_hourly_chart__bars_scale_to_the_busiest_hour(self):
        """The busiest hour fills the plot; failures sit on top of the other runs."""
        start = datetime(2026, 3, 10, 12, tzinfo=UTC)
        buckets = [
            selectors.HourBucket(start, 10, 0),
            selectors.HourBucket(start + timedelta(hours=1), 5, 5),
            selectors.HourBucket(start + timedelta(hours=2), 0, 0),
        ]
        chart = admin_display.hourly_chart(buckets, width=300, height=120)
        busiest, all_failed, empty = chart.bars
        assert (chart.peak, chart.total, chart.failed) == (10, 15, 5)
        assert (busiest.ok_height, busiest.failed_height, busiest.ok_y) == (100, 0, 0)
        assert (all_failed.ok_height, all_failed.failed_height, all_failed.failed_y) == (0, 50, 50)
        assert (empty.ok_height, empty.failed_height) == (0, 0)
        assert busiest.title == "2026-03-10 12:00 to 13:00: 10 runs, 0 failed"
        assert busiest.x < all_failed.x < empty.x

    def test_hourly_chart__no_runs_draws_flat_bars(self):
        """A quiet day draws 24 empty bars instead of dividing by zero."""
        chart = admin_display.hourly_chart(selectors.runs_per_hour(hours=24, now=NOW))
        assert len(chart.bars) == 24
        assert {bar.ok_height for bar in chart.bars} == {0}


class TestHumanDuration:
    @pytest.mark.parametrize(
        ("seconds", "shown"),
        [(None, "—"), (0, "0s"), (42.7, "42s"), (3725, "1h 2m"), (90061, "1d 1h"), (86400, "1d")],
    )
    def test_human_duration__two_largest_units(self, seconds, shown):
        """Uptime reads at a glance: the two largest units."""
        assert admin_display.human_duration(seconds) == shown


class TestAge:
    @pytest.mark.parametrize(
        ("ago", "shown"),
        [
            (timedelta(seconds=12), "12 seconds ago"),
            (timedelta(minutes=5, seconds=3), "5 minutes ago"),
        ],
    )
    def test_age__reads_at_a_glance_with_exact_time_on_hover(self, ago, shown):
        """Last run reads as an age; the exact time is in the title."""
        html = admin_display.age(NOW - ago, now=NOW).replace("\xa0", " ")
        assert f">{shown}</time>" in html
        assert 'title="2026-03-10 14:' in html

    def test_age__never(self):
        """A plugin that never ran says so."""
        assert admin_display.age(None) == "never"
