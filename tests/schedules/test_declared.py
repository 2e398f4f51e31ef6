"""A plugin's declared `schedule = {...}`: checked at load, kept as its 'declared' schedule."""

from __future__ import annotations

import types

import pytest

from plugin_contract.declarations import read_declarations
from plugins_app import pipeline
from plugins_app.models import Plugin, PluginState
from plugins_app.schedules.models import Origin, Schedule

ACTOR = "user:tester"


def declared(schedule: object) -> tuple[dict, tuple[str, str] | None]:
    """What read_declarations makes of a module declaring `schedule`."""
    module = types.SimpleNamespace(run=lambda **params: params, schedule=schedule, __doc__=None)
    return read_declarations(module, "tick")


class TestContract:
    @pytest.mark.parametrize(
        ("schedule", "words"),
        [
            ("*/5 * * * *", "must be a dict"),
            ({"cron": "* * * * *", "every_s": 5}, "exactly one of 'cron' and 'every_s'"),
            ({}, "exactly one of 'cron' and 'every_s'"),
            ({"cron": "* * *"}, "5 fields"),
            ({"every_s": 0}, "number of seconds >= 1"),
            ({"every_s": True}, "number of seconds >= 1"),
            ({"every_s": 60, "overlap": "queue"}, "skip, queue_one, allow"),
            ({"every_s": 60, "missed": "all"}, "run_once, skip"),
            ({"every_s": 60, "params": [1]}, "must be a dict of run() params"),
            ({"every_s": 60, "at": "noon"}, "unknown key(s) at"),
        ],
    )
    def test_bad_schedule__problem_says_what_to_write(self, schedule, words):
        """Each malformed schedule is refused with a message saying what is expected."""
        _, problem = declared(schedule)
        assert problem is not None and problem[0] == "schedule"
        assert words in problem[1]

    def test_good_schedule__normalised_with_default_policies(self):
        """A valid schedule gets its params and default policies filled in."""
        result, problem = declared({"every_s": 300})
        assert problem is None
        assert result["schedule"] == {
            "every_s": 300,
            "params": {},
            "overlap": "skip",
            "missed": "run_once",
        }


@pytest.mark.django_db
class TestLoad:
    def test_declared_schedule__kept_updated_and_removed_with_the_module(self, plugins):
        """Loading makes the 'declared' schedule; a changed module changes it, none removes it."""
        body = "def run(**params):\n    return params\n"
        plugins.add("tick", f"schedule = {{'every_s': 300, 'params': {{'n': 1}}}}\n{body}")
        pipeline.load_plugins(actor=ACTOR)
        schedule = Schedule.objects.get(plugin__name="tick")
        assert (schedule.name, schedule.origin, schedule.every_s) == (
            "declared",
            Origin.DECLARED,
            300,
        )
        assert schedule.params == {"n": 1} and schedule.next_run_at is not None
        plugin = Plugin.objects.get(name="tick")
        assert plugin.next_scheduled_at == schedule.next_run_at

        plugins.add("tick", f"schedule = {{'cron': '0 3 * * *', 'overlap': 'allow'}}\n{body}")
        pipeline.reload_plugin(name="tick", actor=ACTOR)
        schedule.refresh_from_db()
        assert (schedule.cron, schedule.every_s, schedule.overlap) == ("0 3 * * *", None, "allow")
        assert (schedule.next_run_at.hour, schedule.next_run_at.minute) == (3, 0)

        plugins.add("tick", body)
        pipeline.reload_plugin(name="tick", actor=ACTOR)
        assert not Schedule.objects.exists()
        assert Plugin.objects.get(name="tick").next_scheduled_at is None

    def test_bad_cron__load_fails_with_the_field_and_the_fix(self, plugins):
        """A cron expression croniter rejects fails the load, saying which field and why."""
        plugins.add("tick", "schedule = {'cron': '61 * * * *'}\ndef run():\n    return 1\n")
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == PluginState.FAILED
        assert "schedule['cron']" in report.reason and "minute 0-59" in report.reason
        assert not Schedule.objects.exists()

    def test_shape_problem__load_fails_in_the_sandbox(self, plugins):
        """A schedule with both cron and every_s fails the load with the contract's message."""
        plugins.add(
            "tick", "schedule = {'cron': '* * * * *', 'every_s': 5}\ndef run():\n    return 1\n"
        )
        (report,) = pipeline.load_plugins(actor=ACTOR)
        assert report.state == PluginState.FAILED
        assert "exactly one of 'cron' and 'every_s'" in report.reason
