"""loadplugins: refuses to mark many plugins vanished at once without --prune, and its exit
code says whether every plugin it loaded is healthy."""

from __future__ import annotations

import pytest

from plugins_app import pipeline
from plugins_app.models import Plugin, PluginState
from tests.commands.test_commands import command, failing

pytestmark = pytest.mark.django_db

HEALTHY = "def run():\n    return 1\n"


@pytest.fixture
def four_loaded(plugins, tmp_path, settings):
    """Four healthy plugins loaded, then PORTAL_PLUGIN_DIRS pointed at an empty directory."""
    for name in ("a", "b", "c", "d"):
        plugins.add(name, HEALTHY)
    pipeline.load_plugins(actor="test")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return elsewhere


def states() -> dict[str, str]:
    return dict(Plugin.objects.values_list("name", "state"))


class TestManyVanished:
    def test_more_than_two_vanish__refused_exit_2_naming_them_nothing_changed(
        self, four_loaded, settings
    ):
        """A plugin list lacking the known plugins' directory marks none of them: exit 2, why."""
        settings.PORTAL_PLUGIN_DIRS = [str(four_loaded)]
        code, message, _ = failing("loadplugins")
        assert code == 2
        assert message.startswith(
            "Refusing to mark 4 plugins UNAVAILABLE at once: a, b, c, d were not found in "
        )
        assert "PORTAL_PLUGIN_DIRS" in message
        assert "loadplugins --prune" in message
        assert set(states().values()) == {PluginState.INITIALIZED}

    def test_prune__marks_them_unavailable_exit_1(self, four_loaded, settings):
        """With --prune they are marked UNAVAILABLE, and the exit code says plugins are not well."""
        settings.PORTAL_PLUGIN_DIRS = [str(four_loaded)]
        code, message, out = failing("loadplugins", "--prune")
        assert code == 1
        assert message == (
            "4 of 4 plugins are FAILED or UNAVAILABLE (their reasons are above: fix each, "
            "then reload it)"
        )
        assert set(states().values()) == {PluginState.UNAVAILABLE}
        assert out.count("UNAVAILABLE") == 4

    def test_one_vanished__marked_without_prune_exit_1(self, plugins):
        """A single plugin whose file was removed is marked UNAVAILABLE as before, exit 1."""
        plugins.add("keep", HEALTHY)
        gone = plugins.add("gone", HEALTHY)
        pipeline.load_plugins(actor="test")
        gone.unlink()
        code, _, out = failing("loadplugins")
        assert code == 1
        assert states() == {"gone": PluginState.UNAVAILABLE, "keep": PluginState.INITIALIZED}
        assert out.startswith("gone  UNAVAILABLE  ")

    def test_already_unavailable__not_counted_again(self, four_loaded, settings):
        """Plugins already marked vanished by a --prune do not block the next plain load."""
        settings.PORTAL_PLUGIN_DIRS = [str(four_loaded)]
        failing("loadplugins", "--prune")
        code, message, _ = failing("loadplugins")
        assert (code, message.startswith("4 of 4 plugins are FAILED or UNAVAILABLE")) == (1, True)


class TestExitCode:
    def test_all_healthy__exit_0(self, plugins):
        """Every plugin loaded healthy: exit 0."""
        plugins.add("ok", HEALTHY)
        assert command("loadplugins") == "ok  INITIALIZED\n"

    def test_one_failed__exit_1_after_every_line(self, plugins):
        """A plugin that ends FAILED makes the exit code 1, after every plugin's line."""
        plugins.add("ok", HEALTHY)
        plugins.add("broken", "def run(:\n")
        code, message, out = failing("loadplugins")
        assert code == 1
        assert message.startswith("1 of 2 plugins are FAILED or UNAVAILABLE")
        lines = out.splitlines()
        assert [line.split()[:2] for line in lines] == [
            ["broken", "FAILED"],
            ["ok", "INITIALIZED"],
        ]
