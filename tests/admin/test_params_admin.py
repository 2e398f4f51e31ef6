"""The admin and run params: the plugin page shows what run() takes and the params_schema;
a rerun with params the plugin no longer accepts is an error message, nothing run."""

from __future__ import annotations

import pytest
from django.urls import reverse

from plugins_app import pipeline, services
from plugins_app.models import Plugin, PluginRun, PluginState

pytestmark = pytest.mark.django_db

PLUGINS = reverse("admin:plugins_app_plugin_changelist")
SCHEMA_PLUGIN = (
    "params_schema = {'type': 'object', 'properties': {'count': {'type': 'integer'}}}\n"
    "def run(count=1, *, label='x'):\n    return count\n"
)


@pytest.fixture
def counted(plugins, settings, client, make_operator):
    """The plugin 'counted' (a params_schema) loaded; the client logged in as an operator."""
    client.force_login(make_operator("ops", role="operator"))
    settings.PORTAL_RUN_EXECUTOR = "inline"
    plugins.add("counted", SCHEMA_PLUGIN)
    pipeline.load_plugins(actor="test")
    return Plugin.objects.get(name="counted")


class TestPluginPage:
    def test_change_page__shows_params_schema_and_accepted_params(self, client, counted):
        """The plugin page shows the declared params_schema and the names run() accepts."""
        page = client.get(reverse("admin:plugins_app_plugin_change", args=[counted.pk]))
        html = page.content.decode()
        assert "Params schema" in html
        assert "&quot;count&quot;: {" in html
        assert "Run() accepts" in html
        assert "count, label" in html


class TestRerunParams:
    def test_rerun__last_params_no_longer_accepted__error_message_nothing_run(
        self, client, counted
    ):
        """Rerun with last params against the schema says why in an error; nothing is run."""
        services.run_queue(name="counted", params={"count": 2}, actor="test")
        Plugin.objects.filter(name="counted").update(
            params_schema={"type": "object", "properties": {"count": {"type": "string"}}}
        )
        data = {"action": "rerun_selected", "index": 0, "_selected_action": [str(counted.pk)]}
        response = client.post(PLUGINS, data, follow=True)
        messages = [(m.level_tag, str(m)) for m in response.context["messages"]]
        assert messages == [
            (
                "error",
                "Could not rerun 'counted': Params for plugin 'counted' do not fit its "
                "params_schema: params.count: 2 is not of type 'string' (rule: type) (fix the "
                "params, then run it again; nothing was run)",
            )
        ]
        assert PluginRun.objects.count() == 1
        assert Plugin.objects.get(name="counted").state == PluginState.INITIALIZED
