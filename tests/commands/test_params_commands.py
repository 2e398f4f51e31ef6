"""runplugin and rerunplugins refuse params the plugin does not accept: exit 2, nothing run."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from plugins_app import pipeline, services
from plugins_app.models import Plugin, PluginRun, PluginState

pytestmark = pytest.mark.django_db

MISMATCH = (
    "Params for plugin 'greet' do not fit its run(): unknown param 'nme'; run() accepts: name "
    "(fix the params, then run it again; nothing was run)"
)


@pytest.fixture
def greet(plugins):
    plugins.add("greet", 'def run(name="world"):\n    return {"greeting": f"Hi {name}"}\n')
    plugins.add(
        "counted",
        "params_schema = {'type': 'object', 'properties': {'count': {'type': 'integer'}}}\n"
        "def run(count=1):\n    return count\n",
    )
    pipeline.load_plugins(actor="test")
    return plugins


def failing(*args: str) -> tuple[int, str]:
    with pytest.raises(CommandError) as raised:
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())
    return raised.value.returncode, str(raised.value)


def healthy_and_unrun(name: str) -> None:
    plugin = Plugin.objects.get(name=name)
    assert (plugin.state, plugin.error_count, plugin.consecutive_failures) == (
        PluginState.INITIALIZED,
        0,
        0,
    )
    assert not PluginRun.objects.filter(plugin=plugin).exists()


class TestRunPluginParams:
    def test_unknown_param__exit_2_naming_it_and_the_accepted_names(self, greet):
        """A typo'd --param is misuse: exit 2 with the accepted names, no run, no failure."""
        assert failing("runplugin", "greet", "--param", "nme=Ann") == (2, MISMATCH)
        healthy_and_unrun("greet")

    def test_schema_violation__exit_2_naming_the_field(self, greet):
        """A value against the params_schema is misuse: exit 2 naming the field and rule."""
        code, message = failing("runplugin", "counted", "--param", "count=many")
        assert code == 2
        assert "params.count: 'many' is not of type 'integer' (rule: type)" in message
        healthy_and_unrun("counted")


class TestRerunPluginsParams:
    def test_last_params_not_accepted__exit_2_before_anything_runs(self, greet):
        """Last params run() does not take are refused before any rerun: exit 2, same message."""
        services.run_queue(name="greet", params={"name": "Ann"}, actor="test")
        Plugin.objects.filter(name="greet").update(
            run_params={"accepted": ["title"], "required": [], "var_keyword": False}
        )
        code, message = failing("rerunplugins", "greet", "counted")
        assert code == 2
        assert message.startswith("Cannot rerun 'greet' with its last params: Params for plugin")
        assert PluginRun.objects.count() == 1
