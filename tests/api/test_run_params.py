"""POST /v1/plugins/{name}/runs refuses params the plugin does not take; health shows its schema."""

from __future__ import annotations

import json

import pytest

from plugins_app import pipeline
from plugins_app.models import Plugin, PluginRun, PluginState

pytestmark = pytest.mark.django_db

SCHEMA = {
    "type": "object",
    "properties": {"count": {"type": "integer", "minimum": 1}},
    "required": ["count"],
}


@pytest.fixture
def plugins(plugins, settings):
    """Two plugins loaded, runs executed inline: hello (run(name)) and counted (a schema)."""
    settings.PORTAL_RUN_EXECUTOR = "inline"
    plugins.add("hello", 'def run(name="world"):\n    return {"greeting": f"Hello, {name}!"}\n')
    plugins.add("counted", f"params_schema = {SCHEMA!r}\ndef run(count):\n    return count\n")
    pipeline.load_plugins(actor="test")
    return plugins


def post_json(client, path: str, body):
    return client.post(path, json.dumps(body), content_type="application/json")


def unharmed(name: str) -> None:
    plugin = Plugin.objects.get(name=name)
    assert (plugin.state, plugin.error_count, plugin.consecutive_failures) == (
        PluginState.INITIALIZED,
        0,
        0,
    )
    assert not PluginRun.objects.filter(plugin=plugin).exists()


class TestParamsRefused:
    def test_unknown_param__400_naming_it_and_the_accepted_names(self, operator_client, plugins):
        """A typo'd param is a 400 naming it and what run() accepts; the plugin stays healthy."""
        response = post_json(operator_client, "/v1/plugins/hello/runs", {"params": {"nme": "A"}})
        assert response.status_code == 400
        assert response.json() == {
            "detail": "Params for plugin 'hello' do not fit its run(): unknown param 'nme'; "
            "run() accepts: name (fix the params, then run it again; nothing was run)"
        }
        unharmed("hello")
        health = operator_client.get("/v1/plugins/hello/health").json()
        assert (health["state"], health["error_count"]) == ("INITIALIZED", 0)

    def test_schema_violation__400_naming_the_field_and_rule(self, operator_client, plugins):
        """Params against the declared params_schema are a 400 naming the field and the rule."""
        response = post_json(operator_client, "/v1/plugins/counted/runs", {"params": {}})
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert detail.startswith("Params for plugin 'counted' do not fit its run(): missing")
        response = post_json(
            operator_client, "/v1/plugins/counted/runs", {"params": {"count": "two"}}
        )
        assert response.status_code == 400
        assert (
            "params.count: 'two' is not of type 'integer' (rule: type)"
            in (response.json()["detail"])
        )
        unharmed("counted")


class TestSchemaShown:
    def test_health__shows_params_schema(self, api_client, plugins):
        """The health record carries the declared params_schema, null when none is declared."""
        assert api_client.get("/v1/plugins/counted/health").json()["params_schema"] == SCHEMA
        assert api_client.get("/v1/plugins/hello/health").json()["params_schema"] is None
        listed = {r["name"]: r["params_schema"] for r in api_client.get("/v1/plugins").json()}
        assert listed == {"counted": SCHEMA, "hello": None}

    def test_openapi__describes_params_schema(self, api_client):
        """The OpenAPI schema describes the health record's params_schema field."""
        schema = api_client.get("/v1/schema/?format=json").json()
        field = schema["components"]["schemas"]["HealthRecord"]["properties"]["params_schema"]
        assert "JSON Schema" in field["description"]
