"""A run checks the plugin's recorded source by its fields before it calls the sandbox."""

from __future__ import annotations

import pytest

from plugins_app import pipeline
from plugins_app.errors import PluginRefused
from plugins_app.models import Plugin, PluginState

pytestmark = pytest.mark.django_db

ACTOR = "user:tester"


class TestVanishedSource:
    def test_path_with_semicolon__gone_file_refused_as_unavailable(
        self, plugins, tmp_path, settings
    ):
        """A file under a directory named with "; " that vanished is refused, not run and failed."""
        team = tmp_path / "team; ocr"
        team.mkdir()
        path = team / "p.py"
        path.write_text("def run(): return 1\n")
        settings.PORTAL_PLUGIN_DIRS = [str(team)]
        pipeline.reload_plugin(name="p", actor=ACTOR)
        path.unlink()
        with pytest.raises(PluginRefused):
            pipeline.run_plugin(name="p", params={}, actor=ACTOR)
        plugin = Plugin.objects.get(name="p")
        assert (plugin.state, plugin.error_count) == (PluginState.UNAVAILABLE, 0)
        assert plugin.reason.startswith(f"Plugin 'p' is gone: {path} no longer exists")
