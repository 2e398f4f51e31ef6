"""A plugin that declares mode = "resident": its runs go to resident processes, the run record
says so, a crash loop leaves the plugin FAILED with the reason, bad declarations fail the load."""

from __future__ import annotations

import re
import textwrap

import pytest
from django.urls import reverse

from plugins_app import pipeline
from plugins_app.models import Plugin, PluginState, RunStatus

pytestmark = pytest.mark.django_db

ACTOR = "user:tester"

RESIDENT = """
    import os

    mode = "resident"
    resident = {"max_calls": 2}
    SETUPS = []

    def setup():
        SETUPS.append(os.getpid())

    def run():
        return {"pid": os.getpid(), "setups": len(SETUPS)}
"""

CRASHING = """
    import os

    mode = "resident"
    resident = {"max_restarts": 1, "backoff_s": 0.05}
    quarantine_after = 0

    def run():
        os.abort()
"""


def load(plugins, name: str, source: str) -> Plugin:
    plugins.add(name, source)
    (report,) = pipeline.load_plugins(names=[name], actor=ACTOR)
    return Plugin.objects.get(name=report.name)


class TestResidentRuns:
    def test_runs__share_a_process_until_max_calls_and_say_resident(self, plugins):
        """Two runs in one process that ran setup() once, the third in a new one; mode resident."""
        plugin = load(plugins, "steady", RESIDENT)
        assert plugin.state == PluginState.INITIALIZED, plugin.reason
        assert plugin.resident["max_calls"] == 2
        runs = [pipeline.run_plugin(name="steady", params={}, actor=ACTOR) for _ in range(3)]
        assert [run.status for run in runs] == [RunStatus.SUCCEEDED] * 3, runs[0].reason
        pids = [run.result["pid"] for run in runs]
        assert pids[0] == pids[1] != pids[2]
        assert [run.result["setups"] for run in runs] == [1, 1, 1]
        assert {run.mode for run in runs} == {"resident"}

    def test_fork_plugin__its_runs_say_fork(self, plugins):
        """A plugin without a mode declaration runs fork per call, and its run says so."""
        load(plugins, "forky", "def run():\n    return 1\n")
        run = pipeline.run_plugin(name="forky", params={}, actor=ACTOR)
        assert (run.status, run.mode) == (RunStatus.SUCCEEDED, "fork")
        assert Plugin.objects.get(name="forky").resident is None

    def test_crash_loop__the_plugin_ends_failed_with_the_reason(self, plugins):
        """Two crashes (max_restarts 1), then a refused run: the plugin ends FAILED saying why."""
        load(plugins, "crashy", CRASHING)
        runs = [pipeline.run_plugin(name="crashy", params={}, actor=ACTOR) for _ in range(3)]
        assert [run.status for run in runs] == [RunStatus.CRASHED] * 3
        assert [run.signal for run in runs[:2]] == ["SIGABRT", "SIGABRT"]
        plugin = Plugin.objects.get(name="crashy")
        assert plugin.state == PluginState.FAILED
        assert plugin.reason == runs[2].reason
        assert "crash loop" in plugin.reason and "max_restarts" in plugin.reason
        assert "reload the plugin" in plugin.reason

    @pytest.mark.parametrize(
        ("declaration", "words"),
        [
            ('mode = "daemon"', "mode must be 'fork' (the default) or 'resident'"),
            ('resident = {"max_calls": 5}', "resident is declared but mode is 'fork'"),
            ('mode = "resident"\nresident = {"max_calls": 0}', "resident['max_calls']"),
            ('mode = "resident"\nresident = {"workers": 2}', "unknown key(s) workers"),
        ],
    )
    def test_bad_declaration__load_fails_naming_it(self, plugins, declaration, words):
        """A wrong mode or resident knob fails the load with a reason that quotes the problem."""
        plugin = load(plugins, "wrong", f"{declaration}\ndef run():\n    return 1\n")
        assert plugin.state == PluginState.FAILED
        assert words in plugin.reason


CUDA_AT_SETUP = """
    import sys
    import types

    def setup():
        # No GPU here: a stand-in torch whose CUDA says it was initialised, as torch's would.
        fake = types.ModuleType("torch")
        fake.cuda = types.SimpleNamespace(is_initialized=lambda: True)
        sys.modules["torch"] = fake

    def run():
        return "ran"
"""


class TestForkAfterCuda:
    def test_fork_plugin__cuda_in_setup_makes_it_unavailable_saying_resident(self, plugins):
        """A fork-mode plugin whose setup() initialised CUDA (a stand-in torch says so: no GPU
        here) is UNAVAILABLE, uncounted, with a reason that says to declare resident mode."""
        load(plugins, "gpu", CUDA_AT_SETUP)
        run = pipeline.run_plugin(name="gpu", params={}, actor=ACTOR)
        plugin = Plugin.objects.get(name="gpu")
        assert (run.outcome, plugin.state) == ("refused", PluginState.UNAVAILABLE)
        assert "mode = 'resident'" in plugin.reason and "CUDA" in plugin.reason
        assert (plugin.success_count, plugin.error_count) == (0, 0)

    def test_resident_plugin__cuda_in_setup_is_fine(self, plugins):
        """The same plugin declaring mode = 'resident' runs: nothing forks after its setup()."""
        load(plugins, "gpu", 'mode = "resident"\n' + textwrap.dedent(CUDA_AT_SETUP))
        run = pipeline.run_plugin(name="gpu", params={}, actor=ACTOR)
        assert (run.status, run.result) == (RunStatus.SUCCEEDED, "ran")


class TestModeShown:
    def test_run_detail_api__says_the_mode(self, plugins, api_client, settings):
        """GET /v1/runs/{id} says how the run's call ran: resident here."""
        settings.PORTAL_API_READS_REQUIRE_AUTH = False
        load(plugins, "steady", RESIDENT)
        run = pipeline.run_plugin(name="steady", params={}, actor=ACTOR)
        assert api_client.get(f"/v1/runs/{run.pk}").json()["mode"] == "resident"

    def test_admin_run_page__says_the_mode(self, client, make_operator, make_plugin, finish_run):
        """The admin's run page shows the mode beside the memory mechanism."""
        client.force_login(make_operator())
        make_plugin("yolo")
        run = finish_run("yolo", mode="resident", memory_mechanism="rss-sampling")
        url = reverse("admin:plugins_app_pluginrun_change", args=[run.pk])
        content = client.get(url).content.decode()
        assert re.search(r"Mode:</label>\s*<div class=\"readonly\">resident<", content), content
