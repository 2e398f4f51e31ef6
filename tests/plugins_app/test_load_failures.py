"""Plugins that do not load: their traceback is recorded, and a run of one never blames the
portal's own files."""

from __future__ import annotations

import pytest

from plugins_app import pipeline
from plugins_app.models import Plugin, PluginState

pytestmark = pytest.mark.django_db

PORTAL_DIRS = ("sandbox/", "plugin_contract/", "plugins_app/")
BAD_SETUP = """
def setup():
    raise ConnectionRefusedError("license server refused the connection")

def run():
    return 1
"""
BAD_IMPORT = "raise RuntimeError('boom at import')\n\ndef run():\n    return 1\n"


class TestLoadTraceback:
    def test_failed_setup__traceback_recorded(self, plugins):
        """A setup() that raises leaves its traceback, with the plugin's line, on the plugin."""
        path = plugins.add("lic", BAD_SETUP)
        pipeline.load_plugins(names=["lic"], actor="t")
        plugin = Plugin.objects.get(name="lic")
        assert (plugin.state, plugin.load_failed) == (PluginState.FAILED, True)
        assert plugin.load_traceback.startswith("Traceback (most recent call last):")
        assert f'File "{path}", line 3, in setup' in plugin.load_traceback
        assert "ConnectionRefusedError: license server refused" in plugin.load_traceback

    def test_fixed_plugin__traceback_cleared(self, plugins):
        """Once the plugin loads, its old load traceback and failure are gone."""
        plugins.add("lic", BAD_SETUP)
        pipeline.load_plugins(names=["lic"], actor="t")
        plugins.add("lic", "def run():\n    return 1\n")
        pipeline.reload_plugin(name="lic", actor="t")
        plugin = Plugin.objects.get(name="lic")
        assert (plugin.state, plugin.load_failed, plugin.load_traceback) == (
            PluginState.INITIALIZED,
            False,
            "",
        )


class TestRunOfUnloadedPlugin:
    @pytest.mark.parametrize("source", [BAD_IMPORT, BAD_SETUP, "def run(:\n    return 1\n"])
    def test_run__reason_names_the_plugin_file_not_the_portal(self, plugins, settings, source):
        """A run of a plugin that cannot load says where in the plugin it broke, and names no
        file of the portal."""
        settings.PORTAL_RUN_EXECUTOR = "inline"
        path = plugins.add("broken", source)
        pipeline.load_plugins(names=["broken"], actor="t")
        run = pipeline.run_plugin(name="broken", params={}, actor="t")
        assert str(path) in run.reason
        for portal_dir in PORTAL_DIRS:
            assert portal_dir not in run.reason, run.reason
