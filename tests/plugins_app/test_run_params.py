"""Params checked against what the load recorded: run()'s signature and a declared params_schema."""

from __future__ import annotations

import os
import time

import pytest

from plugins_app import pipeline
from plugins_app.errors import InvalidParams
from plugins_app.models import Plugin, PluginRun, PluginState, RunStatus

pytestmark = pytest.mark.django_db

ACTOR = "user:tester"

GREET = 'def run(name="world"):\n    return {"greeting": f"Hello, {name}!"}\n'

SCHEMA_PLUGIN = """
params_schema = {
    "type": "object",
    "properties": {"count": {"type": "integer", "minimum": 1}},
    "required": ["count"],
}
def run(count, label="x"):
    return {"count": count}
"""


def load(name: str) -> Plugin:
    return pipeline.reload_plugin(name=name, actor=ACTOR)


def untouched(name: str) -> None:
    """The plugin is as a load left it: INITIALIZED, nothing counted, no run row."""
    plugin = Plugin.objects.get(name=name)
    assert (plugin.state, plugin.reason) == (PluginState.INITIALIZED, "")
    assert (plugin.success_count, plugin.error_count, plugin.consecutive_failures) == (0, 0, 0)
    assert PluginRun.objects.filter(plugin=plugin).count() == 0


class TestSignatureRecordedAtLoad:
    def test_load__records_accepted_names_and_required(self, plugins):
        """A load records the names run() accepts, those it requires, and whether it takes **kw."""
        plugins.add("p", "def run(seconds, *, label='x'):\n    return seconds\n")
        plugins.add("kw", "def run(a, **rest):\n    return a\n")
        load("p")
        load("kw")
        assert Plugin.objects.get(name="p").run_params == {
            "accepted": ["seconds", "label"],
            "required": ["seconds"],
            "var_keyword": False,
        }
        assert Plugin.objects.get(name="kw").run_params == {
            "accepted": ["a"],
            "required": ["a"],
            "var_keyword": True,
        }


class TestParamsRefusedBeforeQueueing:
    def test_unknown_param__invalid_params_naming_it_and_the_accepted_names(self, plugins):
        """A typo'd param name is refused before any run: named, with the accepted names."""
        plugins.add("greet", GREET)
        load("greet")
        with pytest.raises(InvalidParams) as refused:
            pipeline.run_plugin(name="greet", params={"nme": "Ann"}, actor=ACTOR)
        assert str(refused.value) == (
            "Params for plugin 'greet' do not fit its run(): unknown param 'nme'; "
            "run() accepts: name (fix the params, then run it again; nothing was run)"
        )
        untouched("greet")

    def test_missing_required__refused_naming_it(self, plugins):
        """A param run() requires and the caller left out is refused, naming it."""
        plugins.add("p", "def run(seconds, *, label='x'):\n    return seconds\n")
        load("p")
        with pytest.raises(InvalidParams, match=r"missing param 'seconds'; run\(\) accepts: "):
            pipeline.submit_run(name="p", params={"label": "y"}, actor=ACTOR)
        untouched("p")

    def test_var_keyword__any_name_accepted(self, plugins):
        """A run(**params) takes any names: nothing is refused."""
        plugins.add("echo", "def run(**params):\n    return params\n")
        load("echo")
        run = pipeline.run_plugin(name="echo", params={"anything": 1}, actor=ACTOR)
        assert (run.status, run.result) == (RunStatus.SUCCEEDED, {"anything": 1})

    def test_accepted_params_that_raise__still_a_failed_run(self, plugins):
        """Params that fit, on which run() raises, are the plugin's verdict: a counted failure."""
        plugins.add("p", "def run(seconds):\n    raise ValueError(f'bad seconds {seconds}')\n")
        load("p")
        run = pipeline.run_plugin(name="p", params={"seconds": -1}, actor=ACTOR)
        plugin = Plugin.objects.get(name="p")
        assert (run.status, plugin.state, plugin.error_count) == (
            RunStatus.FAILED,
            PluginState.FAILED,
            1,
        )


class TestSignatureChangedSinceLoad:
    def test_sandbox_refuses__run_closed_refused_uncounted(self, plugins):
        """run() changed on disk since the load: the sandbox refuses, nothing counted, no FAILED."""
        path = plugins.add("p", "def run(seconds):\n    return seconds\n")
        load("p")
        path.write_text("def run(minutes):\n    return minutes\n")
        later = time.time() + 5
        os.utime(path, (later, later))  # a new mtime: the warm host is replaced
        with pytest.raises(InvalidParams, match="Bad params for plugin 'p'"):
            pipeline.run_plugin(name="p", params={"seconds": 1}, actor=ACTOR)
        run = PluginRun.objects.get(plugin__name="p")
        assert (run.status, run.outcome) == (RunStatus.FAILED, "refused")
        assert "reload the plugin" in run.reason
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.running_count) == (PluginState.INITIALIZED, 0)
        assert (plugin.success_count, plugin.error_count, plugin.consecutive_failures) == (0, 0, 0)


class TestParamsSchema:
    def test_load__records_the_schema(self, plugins):
        """A declared params_schema is recorded on the plugin."""
        plugins.add("counted", SCHEMA_PLUGIN)
        plugin = load("counted")
        assert plugin.state == PluginState.INITIALIZED
        assert plugin.params_schema["required"] == ["count"]

    def test_violation__refused_naming_the_field_and_rule(self, plugins):
        """Params against the schema are refused naming the field and the rule broken."""
        plugins.add("counted", SCHEMA_PLUGIN)
        load("counted")
        with pytest.raises(InvalidParams) as refused:
            pipeline.run_plugin(name="counted", params={"count": 0}, actor=ACTOR)
        assert str(refused.value) == (
            "Params for plugin 'counted' do not fit its params_schema: params.count: 0 is "
            "less than the minimum of 1 (rule: minimum) (fix the params, then run it again; "
            "nothing was run)"
        )
        untouched("counted")

    def test_valid_params__run(self, plugins):
        """Params that fit the schema run as usual."""
        plugins.add("counted", SCHEMA_PLUGIN)
        load("counted")
        run = pipeline.run_plugin(name="counted", params={"count": 2}, actor=ACTOR)
        assert (run.status, run.result) == (RunStatus.SUCCEEDED, {"count": 2})

    def test_bad_schema__failed_load_saying_what_to_fix(self, plugins):
        """A params_schema that is no JSON Schema makes the load FAILED with a reason to act on."""
        plugins.add("p", "params_schema = {'type': 'bogus'}\ndef run(): pass\n")
        plugin = load("p")
        assert plugin.state == PluginState.FAILED
        assert plugin.reason.startswith(
            "Plugin 'p' has an invalid declaration: params_schema is not a valid JSON Schema: "
        )
        assert "'bogus' is not valid" in plugin.reason

    def test_schema_not_a_dict__failed_load(self, plugins):
        """A params_schema that is not a dict is an invalid declaration."""
        plugins.add("p", "params_schema = ['count']\ndef run(): pass\n")
        plugin = load("p")
        assert plugin.state == PluginState.FAILED
        assert "params_schema must be a dict (a JSON Schema for the params)" in plugin.reason


class TestRetryDeclarations:
    def test_load__records_retry_and_quarantine_after(self, plugins):
        """A plugin's retry policy and quarantine threshold are recorded by its load."""
        plugins.add(
            "p",
            "retry = {'max_attempts': 3, 'backoff_s': 2}\nquarantine_after = 0\ndef run(): pass\n",
        )
        plugin = load("p")
        assert plugin.state == PluginState.INITIALIZED
        assert plugin.retry_declared == {
            "max_attempts": 3,
            "backoff_s": 2.0,
            "max_backoff_s": 600.0,
            "on_error": False,
        }
        assert plugin.quarantine_after_declared == 0

    @pytest.mark.parametrize(
        ("declared", "message"),
        [
            (
                "retry = {'max_attempts': 3, 'backoff_s': 60, 'max_backoff_s': 5}",
                "retry['max_backoff_s'] (5) must be at least retry['backoff_s'] (60)",
            ),
            ("retry = {'tries': 3}", "retry has unknown key(s) tries (known: max_attempts"),
            ("quarantine_after = -1", "quarantine_after must be a whole number"),
        ],
    )
    def test_bad_declaration__failed_load_saying_what_to_fix(self, plugins, declared, message):
        """A malformed retry or quarantine_after fails the load naming what to fix."""
        plugins.add("p", f"{declared}\ndef run(): pass\n")
        plugin = load("p")
        assert plugin.state == PluginState.FAILED
        assert plugin.reason.startswith(f"Plugin 'p' has an invalid declaration: {message}")
        assert "then reload the plugin" in plugin.reason
